"""Heatmaps of small pixel changes: the attack's perturbation and what an input-changing defense changed.

Perturbations of a few /255 are invisible in the image itself, so both maps show the per-pixel
magnitude (largest change over the color channels) in /255 units on a colormap with a scale bar, next
to the signed change amplified to be seen.
"""
from __future__ import annotations

import numpy as np
import torch

from .render import new_figure, to_array

CMAP = "magma"


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


def change_figure(before: torch.Tensor, after: torch.Tensor, title: str, bound: float | None = None,
                  vmax: float | None = None) -> np.ndarray:
    """Two panels: the amplified signed change and its magnitude heatmap with a colorbar (in /255)."""
    if after.shape[-2:] != before.shape[-2:]:
        after = torch.nn.functional.interpolate(after.reshape(1, 3, *after.shape[-2:]).float(),
                                                size=before.shape[-2:], mode="bilinear", align_corners=False)
    delta = after.reshape(before.shape) - before
    mag = magnitude(delta)
    top = float(vmax) if vmax else max(float(mag.max()), 1.0)
    fig = new_figure(6.4, 3.2)
    ax_signed, ax_mag = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.02, right=0.88, bottom=0.03, top=0.82, wspace=0.08)
    gain = 0.5 / bound if bound else (0.5 / (top / 255.0) if top > 0 else 1.0)
    ax_signed.imshow(amplified(delta, bound or top / 255.0), interpolation="nearest")
    ax_signed.set_title(f"signed change (x{gain:.0f})", fontsize=9)
    im = ax_mag.imshow(mag, cmap=CMAP, vmin=0.0, vmax=top, interpolation="nearest")
    ax_mag.set_title(f"|change|, max {mag.max():.1f}/255", fontsize=9)
    bar = fig.colorbar(im, cax=fig.add_axes((0.9, 0.08, 0.025, 0.7)))
    bar.set_label("per-pixel change (/255)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    for ax in (ax_signed, ax_mag):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return to_array(fig)


def perturbation_heatmap(clean: torch.Tensor, adversarial: torch.Tensor, eps: float | None = None,
                         title: str = "Attack perturbation") -> np.ndarray:
    """What the attack added; the scale is tied to the budget eps (pixel units) when it is given."""
    vmax = eps * 255.0 if eps and eps > 0 else None
    return change_figure(clean, adversarial, title, bound=eps if eps and eps > 0 else None, vmax=vmax)


def defense_change_heatmap(received: torch.Tensor, classified: torch.Tensor, title: str) -> np.ndarray:
    """What an input-changing defense (JPEG, filters, resizing, counterattacks) did to its input."""
    return change_figure(received, classified, title)
