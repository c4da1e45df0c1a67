import pytest
import torch

from demo import world


def test_same_seed_same_batch():
    a = world.make_batch(8, seed=3, image_size=64)
    b = world.make_batch(8, seed=3, image_size=64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    c = world.make_batch(8, seed=4, image_size=64)
    assert not torch.equal(a[0], c[0])


def test_images_are_8bit_and_in_range():
    images, labels, _ = world.make_batch(16, seed=0, image_size=64)
    assert images.shape == (16, 3, 64, 64)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(torch.round(images * 255) / 255, images)
    assert labels.min() >= 0 and labels.max() < len(world.CLASSNAMES)


def test_held_out_combinations_never_in_training_split():
    _, labels, caps = world.make_batch(2000, seed=1, image_size=16, split="seen")
    assert not set(labels.tolist()) & set(world.HELD_OUT_CLASSES)
    for cap in caps:
        assert not any(f"{c} {s}" in cap for c, s in world.HELD_OUT)
    _, held, _ = world.make_batch(200, seed=1, image_size=16, split="held_out")
    assert set(held.tolist()) <= set(world.HELD_OUT_CLASSES)


def test_world_size_and_captions():
    assert len(world.SHAPES) >= 6 and len(world.COLOR_NAMES) >= 8
    assert len(world.HELD_OUT) == len(world.COLOR_NAMES)
    _, labels, caps = world.make_batch(64, seed=2, image_size=16)
    for y, cap in zip(labels.tolist(), caps):
        color, shape = world.CLASSNAMES[y].split()
        assert color in cap or shape in cap  # every caption names at least one attribute
        assert cap.startswith("a ")


def test_shape_is_visible_against_background():
    # The shape's pixels must differ from the background, or labels would be noise.
    images, labels, _ = world.make_batch(32, seed=5, image_size=64)
    spread = images.flatten(2).std(-1).mean(1)
    assert (spread > 0.03).all()


def _hue_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs() % 360
    return torch.minimum(d, 360 - d)


def test_off_palette_hues_keep_away_from_each_shapes_held_out_colour():
    from demo.world.render import COLORS, OFF_PALETTE_GAP

    g = torch.Generator().manual_seed(0)
    shapes = torch.arange(len(world.SHAPES)).repeat(500)
    hues = world.off_palette_hues(shapes, g)
    held = {s: COLORS[c][0] for c, s in world.HELD_OUT}
    for i, name in enumerate(world.SHAPES):
        mine = hues[shapes == i]
        assert _hue_distance(mine, torch.tensor(held[name])).min() >= OFF_PALETTE_GAP
        # ...and cover the rest of the circle: every other 30-degree sector gets some
        covered = {int(h // 30) for h in mine.tolist()}
        assert len(covered) >= 10


def test_off_palette_rendering_uses_the_given_hue():
    g = torch.Generator().manual_seed(1)
    scenes = world.sample_scenes(6, g, "all")
    scenes.size[:] = 1  # large shapes, so the centre pixel is on the shape for most of them
    hues = torch.tensor([0.0, 60.0, 120.0, 180.0, 240.0, 300.0])
    a = world.render(scenes, 64, torch.Generator().manual_seed(2), hues)
    b = world.render(scenes, 64, torch.Generator().manual_seed(2), (hues + 180) % 360)
    assert torch.equal(torch.round(a * 255) / 255, a)
    # same geometry and background, opposite hues: the images differ only where the shape is
    differs = (a - b).abs().amax(1) > 0.2
    assert 0.02 < differs.float().mean() < 0.8
    # the dominant channel of the shape's pixels follows the hue (red at 0, green at 120, blue at 240)
    for i, channel in ((0, 0), (2, 1), (4, 2)):
        pixels = a[i][:, differs[i]]
        assert pixels.mean(1).argmax() == channel


def test_pale_off_palette_shapes_stay_off_the_pale_held_out_colour():
    from demo.world.render import COLORS, OFF_PALETTE_SATURATION

    shapes = torch.arange(len(world.SHAPES))
    floor = world.off_palette_saturation_floor(shapes, 0.1)
    pale_held = {s for c, s in world.HELD_OUT if COLORS[c][1][0] < OFF_PALETTE_SATURATION[0]}
    assert pale_held == {"ring"}  # pink is the only colour paler than the off-palette floor
    for i, name in enumerate(world.SHAPES):
        assert float(floor[i]) == pytest.approx(OFF_PALETTE_SATURATION[0] if name in pale_held else 0.1)
    # a floor above the default never raises it
    assert (world.off_palette_saturation_floor(shapes, 0.9) <= OFF_PALETTE_SATURATION[0]).all()


def test_the_default_saturation_floor_draws_the_same_images():
    g = torch.Generator().manual_seed(3)
    scenes = world.sample_scenes(8, g, "all")
    hues = world.off_palette_hues(scenes.shape, g)
    plain = world.render(scenes, 32, torch.Generator().manual_seed(4), hues)
    same = world.render(scenes, 32, torch.Generator().manual_seed(4), hues, torch.full((8,), 0.5))
    pale = world.render(scenes, 32, torch.Generator().manual_seed(4), hues, torch.zeros(8))
    assert torch.equal(plain, same)
    assert not torch.equal(plain, pale)
