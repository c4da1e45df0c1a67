"""Heatmaps of small pixel changes: the attack's perturbation and what an input-changing defense changed.

Perturbations of a few /255 are invisible in the image itself, so both maps show the per-pixel
magnitude (largest change over the color channels) in /255 units on a colormap with a scale bar, next
to the signed change amplified to be seen.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .raster import WHITE, colorbar, colorize, draw_text, enlarge, to_array


def _as_hwc(t: torch.Tensor) -> np.ndarray:
    if t.ndim == 4:
        t = t[0]
    return t.detach().float().cpu().permute(1, 2, 0).numpy()


def amplified(delta: torch.Tensor, bound: float | None = None) -> np.ndarray:
    """The signed change as an image: gray is no change, scaled so that `bound` (or the largest change)
    reaches full brightness. Returns (H, W, 3) floats in [0, 1]."""
    d = _as_hwc(delta)
    scale = bound if bound and bound > 0 else float(np.abs(d).max())
    if scale <= 0:
        return np.full_like(d, 0.5)
    return np.clip(0.5 + 0.5 * d / scale, 0.0, 1.0)


def magnitude(delta: torch.Tensor) -> np.ndarray:
    """(H, W) largest absolute change over channels, in /255 units."""
    return np.abs(_as_hwc(delta)).max(axis=-1) * 255.0


# On-screen side of each panel, in pixels: two figures side by side fit a 1440 px screen at natural size.
PANEL = 216


def change_figure(before: torch.Tensor, after: torch.Tensor, title: str, bound: float | None = None,
                  vmax: float | None = None) -> np.ndarray:
    """Two panels: the amplified signed change and its magnitude heatmap with a color scale (in /255)."""
    if after.shape[-2:] != before.shape[-2:]:
        after = torch.nn.functional.interpolate(after.reshape(1, 3, *after.shape[-2:]).float(),
                                                size=before.shape[-2:], mode="bilinear", align_corners=False)
    delta = after.reshape(before.shape) - before
    mag = magnitude(delta)
    top = float(vmax) if vmax else max(float(mag.max()), 1.0)
    scale = bound or top / 255.0
    signed = enlarge((amplified(delta, scale) * 255).round().astype(np.uint8), PANEL)
    heat = enlarge(colorize(mag, top), PANEL)
    bar = colorbar(heat.height, top, "per-pixel change (/255)")
    pad, head, sub = 14, 30, 22
    width = pad + signed.width + pad + heat.width + 8 + bar.width + pad
    canvas = Image.new("RGB", (width, head + sub + max(signed.height, bar.height) + pad), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_text(draw, (width // 2, 8), title, size=16, anchor="mt")
    x2 = pad + signed.width + pad
    draw_text(draw, (pad + signed.width // 2, head), f"signed, ×{0.5 / scale:.0f} (gray = 0)", anchor="mt")
    draw_text(draw, (x2 + heat.width // 2, head), f"size, max {mag.max():.1f}/255", anchor="mt")
    canvas.paste(signed, (pad, head + sub))
    canvas.paste(heat, (x2, head + sub))
    canvas.paste(bar, (x2 + heat.width + 8, head + sub - 6))
    return to_array(canvas)


def perturbation_heatmap(clean: torch.Tensor, adversarial: torch.Tensor, eps: float | None = None,
                         title: str = "Attack perturbation") -> np.ndarray:
    """What the attack added; the scale is tied to the budget eps (pixel units) when it is given."""
    vmax = eps * 255.0 if eps and eps > 0 else None
    return change_figure(clean, adversarial, title, bound=eps if eps and eps > 0 else None, vmax=vmax)


def defense_change_heatmap(received: torch.Tensor, classified: torch.Tensor, title: str) -> np.ndarray:
    """What an input-changing defense (JPEG, filters, resizing, counterattacks) did to its input."""
    return change_figure(received, classified, title)
