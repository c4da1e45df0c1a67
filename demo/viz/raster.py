"""Small raster drawing helpers: text, colormaps, pixel-exact upscaling, a colorbar.

Figures shown on every request (heatmaps, timing chart) are drawn directly with numpy and Pillow:
a matplotlib figure costs a few hundred milliseconds on a 2-core machine, these take a few.
"""
from __future__ import annotations

import functools

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)
INK = (40, 40, 40)
MUTED = (110, 110, 110)
# Smallest text in any figure, in image pixels. Figures are shown at their natural size on a 1440 px wide
# screen (and scroll sideways on a phone rather than shrink), so this is the size a projector shows.
MIN_TEXT = 14


@functools.lru_cache(maxsize=8)
def font(size: int = MIN_TEXT) -> ImageFont.ImageFont:
    # DejaVu Sans ships inside matplotlib, so it is there on every machine that runs the app.
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (OSError, ValueError):
        return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4)
def lut(name: str = "magma") -> np.ndarray:
    """(256, 3) uint8 colors of a matplotlib colormap."""
    colors = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(colors * 255).astype(np.uint8)


def colorize(values: np.ndarray, vmax: float, name: str = "magma") -> np.ndarray:
    """(H, W) values in [0, vmax] -> (H, W, 3) uint8 colors."""
    idx = np.clip(np.round(values / max(vmax, 1e-12) * 255), 0, 255).astype(np.uint8)
    return lut(name)[idx]


def enlarge(pixels: np.ndarray, side: int) -> Image.Image:
    """Show an image at `side` pixels, each source pixel as a sharp square (or shrunk smoothly if larger)."""
    image = Image.fromarray(pixels)
    h, w = pixels.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.NEAREST if scale >= 1 else Image.BOX)


def text_width(text: str, size: int = MIN_TEXT) -> float:
    return font(size).getlength(text)


def draw_text(draw: ImageDraw.ImageDraw, xy, text: str, size: int = MIN_TEXT, fill=INK, anchor: str = "la") -> None:
    draw.text(xy, text, font=font(size), fill=fill, anchor=anchor)


def vertical_text(text: str, size: int = MIN_TEXT, fill=MUTED) -> Image.Image:
    width = int(text_width(text, size)) + 4
    strip = Image.new("RGB", (width, size + 6), WHITE)
    ImageDraw.Draw(strip).text((2, 1), text, font=font(size), fill=fill)
    return strip.rotate(90, expand=True)


def colorbar(height: int, vmax: float, label: str, name: str = "magma") -> Image.Image:
    """A vertical color scale from 0 (bottom) to vmax (top) with five ticks and a rotated label."""
    bar_w, ticks_w = 14, 48
    side = vertical_text(label)
    image = Image.new("RGB", (bar_w + ticks_w + side.width, height + 12), WHITE)
    gradient = lut(name)[np.linspace(255, 0, height).astype(np.uint8)]
    strip = np.repeat(gradient[:, None, :], bar_w, axis=1)
    image.paste(Image.fromarray(strip), (0, 6))
    draw = ImageDraw.Draw(image)
    for k in range(5):
        value = vmax * k / 4
        y = 6 + round((height - 1) * (1 - k / 4))
        draw.line([(bar_w, y), (bar_w + 4, y)], fill=INK)
        draw_text(draw, (bar_w + 7, y), f"{value:.1f}" if vmax < 100 else f"{value:.0f}", anchor="lm")
    image.paste(side, (bar_w + ticks_w, 6 + max(0, (height - side.height) // 2)))
    return image


def to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).copy()
