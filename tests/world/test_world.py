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
