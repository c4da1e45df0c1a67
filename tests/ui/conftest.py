"""Fixtures for the app's tests: the tiny model as the app's model, test images, the registered attack."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

LABELS_TEXT = "cat\ndog\ncar\ntree"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launch():
    """launch(model_key) -> the URL of the app served on localhost (closed after the module)."""
    from demo.ui import build_demo

    apps = []

    def start(model_key: str) -> str:
        demo = build_demo(model_key)
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                                quiet=True)
        apps.append(demo)
        return url

    yield start
    for demo in apps:
        demo.close()


@pytest.fixture(scope="session")
def model_key(tiny_dir):
    return f"local-dir:{tiny_dir}"


@pytest.fixture(scope="session")
def allowed(model_key):
    return {model_key}


@pytest.fixture(scope="session")
def attack_name():
    import demo.attacks  # noqa: F401
    from demo.registry import ATTACKS

    if not len(ATTACKS):
        pytest.skip("no attack registered")
    return "pgd" if "pgd" in ATTACKS else ATTACKS.names()[0]


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="session")
def odd_files(tmp_path_factory):
    """Images a user might upload that are not plain 8-bit RGB PNGs."""
    d = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    files = {}
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 90, np.uint8)]), "RGBA").save(d / "rgba.png")
    Image.fromarray(rgb[..., 0], "L").save(d / "gray.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257, "I;16").save(d / "sixteen.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(d / "palette.gif")
    frames = [Image.fromarray(np.roll(rgb, k, axis=1)) for k in range(3)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (2, 2), (250, 10, 10)).save(d / "tiny.png")
    Image.new("RGB", (3000, 2400), (10, 200, 10)).save(d / "huge.png")
    for path in d.iterdir():
        files[path.stem] = str(path)
    (d / "notes.png").write_text("this is not an image")
    files["not_an_image"] = str(d / "notes.png")
    return files
