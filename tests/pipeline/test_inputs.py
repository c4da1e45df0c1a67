"""Input checking and image loading: every bad input gets an InputError, every odd image a clean RGB tensor."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from demo import pipeline
from demo.pipeline import InputError, check_labels, load_image, make_attack, make_defense, to_model_input, to_uint8
from demo.registry import ATTACKS


def _png(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("labels, message", [
    ([], "No labels"),
    (["  ", ""], "No labels"),
    (["cat"], "at least two"),
    (["cat", "Cat "], "Duplicate"),
    (["a dog", "a  dog"], "Duplicate"),
    ([f"label {i}" for i in range(pipeline.MAX_LABELS + 1)], "too many"),
    (["cat", "x" * (pipeline.MAX_LABEL_CHARS + 1)], "characters"),
])
def test_bad_labels(labels, message):
    with pytest.raises(InputError, match=message):
        check_labels(labels)


def test_labels_are_stripped():
    assert check_labels([" cat ", "dog", ""]) == ["cat", "dog"]


def test_attack_parameters_are_checked():
    name = "pgd" if "pgd" in ATTACKS else ATTACKS.names()[0]
    cls = ATTACKS.get(name)
    eps = next(f for f in cls.params() if f.name == "eps")
    with pytest.raises(InputError, match="out of range"):
        make_attack(name, {"eps": eps.metadata["hi"] * 2})
    with pytest.raises(InputError, match="out of range"):
        make_attack(name, {"eps": -1 / 255})
    with pytest.raises(InputError, match="no parameter"):
        make_attack(name, {"not_a_param": 1})
    with pytest.raises(InputError, match="number"):
        make_attack(name, {"eps": "big"})
    with pytest.raises(InputError, match="Unknown attack"):
        make_attack("no-such-attack", {})
    if any(f.name == "steps" for f in cls.params()):
        with pytest.raises(InputError, match="out of range"):
            make_attack(name, {"steps": 0})
        with pytest.raises(InputError, match="whole number"):
            make_attack(name, {"steps": 2.5})
        assert make_attack(name, {"steps": 3.0}).steps == 3


def test_out_of_range_message_speaks_in_255ths():
    cls = ATTACKS.get("pgd") if "pgd" in ATTACKS else None
    if cls is None:
        pytest.skip("no PGD registered")
    with pytest.raises(InputError, match=r"/255"):
        make_attack("pgd", {"eps": 200 / 255})


def test_defense_checks():
    with pytest.raises(InputError, match="Unknown defense"):
        make_defense("training-free", "no-such-defense", {})
    with pytest.raises(ValueError):
        make_defense("no-such-paradigm", "none", {})
    assert make_defense("test-time", "none").name == "none"
    from demo.registry import DEFENSES
    for name in DEFENSES.names():
        cls = DEFENSES.get(name)
        if name == "none":
            continue
        wrong = next(p for p in pipeline.PARADIGMS if p != cls.paradigm)
        with pytest.raises(InputError, match="defense, not a"):
            make_defense(wrong, name, {})
        assert make_defense(cls.paradigm, name, {}).name == name


# ------------------------------------------------------------------------------------------ images

def _rgb(w=40, h=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_modes_become_rgb8():
    rgb = _rgb()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    cases = {
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "LA": Image.fromarray(rgba[..., [0, 3]], "LA"),
        "L": Image.fromarray(rgb[..., 0], "L"),
        "1": Image.fromarray(rgb[..., 0] > 128),
        "P": Image.fromarray(rgb).convert("P"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "I;16": Image.fromarray((rgb[..., 0].astype(np.uint16) * 257), "I;16"),
        "I": Image.fromarray(rgb[..., 0].astype(np.int32) * 257, "I"),
        "F": Image.fromarray(rgb[..., 0].astype(np.float32) / 255.0, "F"),
    }
    for mode, image in cases.items():
        out = load_image(image)
        assert out.mode == "RGB" and out.size == (40, 30), mode
    # 16-bit grey maps to the same 8-bit values, not to a saturated white image.
    sixteen = np.asarray(load_image(cases["I;16"]))[..., 0]
    assert np.array_equal(sixteen, rgb[..., 0])
    floats = np.asarray(load_image(cases["F"]))[..., 0]
    assert np.abs(floats.astype(int) - rgb[..., 0]).max() <= 1
    # Transparency is composited on white.
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(load_image(clear)).min() == 255


def test_files_of_every_kind(tmp_path):
    rgb = Image.fromarray(_rgb())
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    animated = load_image(gif.getvalue())
    assert tuple(np.asarray(animated)[0, 0]) == (255, 0, 0)  # first frame
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF"):
        assert load_image(_png(rgb, fmt)).size == (40, 30), fmt
    cmyk_jpeg = _png(rgb.convert("CMYK"), "JPEG")
    assert load_image(cmyk_jpeg).mode == "RGB"
    path = tmp_path / "x.png"
    rgb.save(path)
    assert load_image(path).size == (40, 30)


def test_exif_rotation_is_applied():
    image = Image.fromarray(_rgb(40, 30))
    exif = Image.Exif()
    exif[274] = 6  # rotated 90 degrees
    out = load_image(_png(image, "JPEG", exif=exif))
    assert out.size == (30, 40)


@pytest.mark.parametrize("payload, message", [
    (b"this is not an image at all", "not an image"),
    (b"", "not an image"),
])
def test_unreadable_files(payload, message):
    with pytest.raises(InputError, match=message):
        load_image(payload)


def test_truncated_file():
    data = _png(Image.fromarray(_rgb(200, 200)), "PNG")
    with pytest.raises(InputError, match="damaged|not an image"):
        load_image(data[: len(data) // 2])


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="could not be found"):
        load_image(tmp_path / "nope.png")


def test_huge_images_are_refused_or_shrunk(monkeypatch):
    big = Image.new("RGB", (pipeline.MAX_WORKING_SIDE * 2, 100), (10, 20, 30))
    assert max(load_image(big).size) == pipeline.MAX_WORKING_SIDE
    monkeypatch.setattr("demo.pipeline.inputs.MAX_DECODE_PIXELS", 1000)
    with pytest.raises(InputError, match="megapixels"):
        load_image(Image.new("RGB", (100, 100)))


def test_model_input_for_tiny_and_extreme_images(tiny_model):
    s = tiny_model.image_size
    for size in ((1, 1), (3, 2), (1, 5000), (5000, 1), (640, 480)):
        x = to_model_input(tiny_model, Image.new("RGB", size, (200, 100, 50)))
        assert x.shape == (1, 3, s, s), size
        assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_model_size_png_roundtrip_is_exact(tiny_model, tmp_path):
    """The downloaded adversarial PNG, uploaded again, gives back exactly the classified tensor."""
    s = tiny_model.image_size
    x = torch.round(torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(1)) * 255) / 255
    path = tmp_path / "adv.png"
    Image.fromarray(to_uint8(x)).save(path)
    assert torch.equal(to_model_input(tiny_model, path), x)
