"""Regenerate the example images in assets/examples: `python -m demo.ui.examples`.

All examples are made here, so they are free to use: teaching-world scenes drawn by the world's own
renderer, and a few synthetic "photo-like" scenes painted with numpy. Each photo-like image gets a
same-named .txt with candidate labels that fit it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from ..models.teaching import IMAGE_SIZE
from ..pipeline.inputs import to_uint8
from ..world import BACKGROUNDS, COLOR_NAMES, HELD_OUT, SHAPES, Scenes, render
from .assets import EXAMPLES_DIR

TEACHING = [("red", "star", "striped"), ("blue", "heart", "plain"), ("green", "cross", "dotted"),
            ("yellow", "circle", "checkered"), ("purple", "moon", "cloudy"), ("cyan", "triangle", "noisy"),
            ("orange", "heart", "plain")]
PHOTO_LABELS = {
    "sunset": ["sunset", "beach", "forest", "city street", "snowy mountain", "desert"],
    "apple": ["apple", "tomato", "orange", "ball", "cherry", "strawberry"],
    "chessboard": ["chessboard", "tiled floor", "zebra", "barcode", "keyboard"],
    "night_sky": ["night sky", "moon", "street lamp", "sunrise", "snowfall"],
}


def teaching_examples(folder: Path, seed: int = 7) -> list[Path]:
    paths = []
    for k, (color, shape, bg) in enumerate(TEACHING):
        scenes = Scenes(color=torch.tensor([COLOR_NAMES.index(color)]), shape=torch.tensor([SHAPES.index(shape)]),
                        size=torch.tensor([1]), background=torch.tensor([BACKGROUNDS.index(bg)]))
        image = render(scenes, IMAGE_SIZE, torch.Generator().manual_seed(seed + k))[0]
        pixels = to_uint8(image)
        held = "_held-out" if (color, shape) in HELD_OUT else ""
        path = folder / f"teaching_{color}_{shape}{held}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:h, 0:w].astype(np.float64) / np.array([h, w]).reshape(2, 1, 1)


def sunset(rng: np.random.Generator, size=(240, 320)) -> np.ndarray:
    h, w = size
    y, x = _grid(h, w)
    top, bottom = np.array([60, 40, 110]), np.array([255, 150, 60])
    sky = top + (bottom - top) * (y[..., None] / 0.6).clip(0, 1)
    sun = np.exp(-(((x - 0.5) * 1.4) ** 2 + ((y - 0.55) * 2.2) ** 2) / 0.004)[..., None]
    img = sky + sun * (np.array([255, 240, 180]) - sky)
    sea = y > 0.6
    ripple = 0.5 + 0.5 * np.sin(y * 300 + rng.normal(0, 0.6, (h, w)))
    glow = np.exp(-((x - 0.5) ** 2) / 0.01) * ripple
    water = np.array([30, 40, 90]) + glow[..., None] * np.array([200, 130, 60])
    img[sea] = water[sea]
    return img


def apple(rng: np.random.Generator, size=(256, 256)) -> np.ndarray:
    h, w = size
    y, x = _grid(h, w)
    grain = 0.5 + 0.5 * np.sin(x * 40 + 3 * np.sin(y * 12) + rng.normal(0, 0.3, (h, w)))
    img = (np.array([150, 95, 55]) + grain[..., None] * np.array([40, 25, 10]))
    img[y < 0.62] = np.array([225, 220, 210])
    dx, dy = x - 0.5, y - 0.52
    r = np.sqrt(dx ** 2 + (dy * 1.1) ** 2)
    inside = r < 0.3
    light = np.clip(1.0 - 1.6 * np.sqrt((dx + 0.1) ** 2 + (dy + 0.12) ** 2), 0.25, 1.0)
    body = np.array([200, 20, 25]) * light[..., None]
    highlight = np.exp(-((dx + 0.1) ** 2 + (dy + 0.13) ** 2) / 0.002)[..., None] * 200
    img[inside] = np.clip(body + highlight, 0, 255)[inside]
    shadow = (np.abs(dy - 0.3) < 0.03) & (np.abs(dx) < 0.28) & ~inside
    img[shadow] *= 0.7
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    draw.line([(128, 62), (134, 36)], fill=(90, 60, 30), width=5)
    draw.ellipse([136, 34, 170, 50], fill=(60, 140, 50))
    return np.asarray(pil).astype(np.float64)


def chessboard(rng: np.random.Generator, size=(256, 256)) -> np.ndarray:
    h, w = size
    y, x = _grid(h, w)
    squares = ((np.floor(x * 8) + np.floor(y * 8)) % 2)[..., None]
    light, dark = np.array([235, 215, 180]), np.array([120, 80, 50])
    img = dark + squares * (light - dark)
    vignette = 1 - 0.35 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    return img * vignette[..., None]


def night_sky(rng: np.random.Generator, size=(240, 320)) -> np.ndarray:
    h, w = size
    y, x = _grid(h, w)
    img = np.array([5, 10, 35]) + y[..., None] * np.array([20, 30, 70])
    stars = rng.random((h, w)) > 0.996
    img[stars] = 230
    moon = ((x - 0.72) ** 2 + ((y - 0.3) * 0.75) ** 2 < 0.012) & ((x - 0.69) ** 2 + ((y - 0.27) * 0.75) ** 2 > 0.009)
    img[moon] = np.array([245, 240, 205])
    return img


def photo_examples(folder: Path, seed: int = 11) -> list[Path]:
    paths = []
    for k, (name, painter) in enumerate((("sunset", sunset), ("apple", apple), ("chessboard", chessboard),
                                         ("night_sky", night_sky))):
        rng = np.random.default_rng(seed + k)
        pixels = painter(rng)
        pixels = pixels + rng.normal(0, 3.0, pixels.shape)  # a little sensor noise, as in a photo
        image = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
        path = folder / f"photo_{name}.png"
        image.save(path)
        path.with_suffix(".txt").write_text(f"# Labels for the {name.replace('_', ' ')} example\n"
                                            + "\n".join(PHOTO_LABELS[name]) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the app's example images.")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in teaching_examples(args.out) + photo_examples(args.out):
        print(path)


if __name__ == "__main__":
    main()
