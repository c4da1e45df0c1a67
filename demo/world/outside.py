"""Images from outside the teaching world, to calibrate and measure the out-of-world check.

Made here or taken from installed packages, so the set needs no network: a portrait photograph that
matplotlib ships (Grace Hopper, public domain) and crops of it, the app's photo-like examples, uniform
noise, smooth colour gradients and line drawings on paper-coloured grounds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def portrait() -> Image.Image:
    """A real photograph (matplotlib's sample data): the portrait a teacher might upload."""
    import matplotlib.cbook as cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


def outside_images(size: int = 128, per_kind: int = 20, seed: int = 0) -> dict[str, list[Image.Image]]:
    """{kind: images} of non-world images; `per_kind` of each synthetic kind."""
    g = np.random.default_rng(seed)
    photo = portrait()
    w, h = photo.size
    crops = []
    for _ in range(per_kind // 2):
        cw, ch = int(w * g.uniform(0.4, 0.8)), int(h * g.uniform(0.4, 0.8))
        left, top = int(g.integers(0, w - cw)), int(g.integers(0, h - ch))
        crops.append(photo.crop((left, top, left + cw, top + ch)))
    noise = [Image.fromarray((g.random((size, size, 3)) * 255).astype(np.uint8)) for _ in range(per_kind)]
    gradients = []
    t = np.linspace(0, 1, size)
    for _ in range(per_kind):
        a, b = g.random(3) * 255, g.random(3) * 255
        ramp = t[None, :, None] if g.random() < 0.5 else t[:, None, None]
        gradients.append(Image.fromarray((a + (b - a) * ramp * np.ones((size, size, 1))).astype(np.uint8)))
    drawings = []
    for _ in range(per_kind):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in g.integers(170, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(g.integers(4, 12))):
            points = [tuple(int(v) for v in g.integers(0, size, 2)) for _ in range(int(g.integers(2, 5)))]
            draw.line(points, fill=tuple(int(v) for v in g.integers(0, 120, 3)), width=int(g.integers(1, 5)))
        drawings.append(img)
    examples = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("photo_*.png"))]
    return {"photo": [photo] + crops, "photo-like examples": examples, "noise": noise, "gradients": gradients,
            "drawings": drawings}
