"""Random resizing and padding (Xie, Wang, Zhang, Ren & Yuille, "Mitigating Adversarial Effects Through
Randomization", ICLR 2018, arXiv 1711.01991)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...registry import DEFENSES
from .input_transform import InputTransformDefense
from ..base import param


def draw_resize_pad(n: int, h: int, w: int, max_scale: float,
                    generator: torch.Generator) -> list[tuple[int, int, int, int]]:
    """Per image (rh, rw, top, left): a random size in [S, S*max_scale) and a random offset in the
    S*max_scale canvas. Draws come from `generator` (CPU) so they do not depend on the device."""
    ph, pw = _canvas(h, w, max_scale)
    out = []
    for _ in range(n):
        rh = int(torch.randint(h, ph, (1,), generator=generator))
        # Square inputs keep their aspect ratio, as in the paper (rnd x rnd).
        rw = rh if h == w and ph == pw else int(torch.randint(w, pw, (1,), generator=generator))
        top = int(torch.randint(0, ph - rh + 1, (1,), generator=generator))
        left = int(torch.randint(0, pw - rw + 1, (1,), generator=generator))
        out.append((rh, rw, top, left))
    return out


def _canvas(h: int, w: int, max_scale: float) -> tuple[int, int]:
    return max(h + 1, int(round(h * max_scale))), max(w + 1, int(round(w * max_scale)))


def resize_pad(images: torch.Tensor, draws: list[tuple[int, int, int, int]], max_scale: float) -> torch.Tensor:
    """Apply drawn (rh, rw, top, left): resize, zero-pad to the canvas, resize back to S. Every step is
    differentiable in `images` (bilinear resizing and padding are linear maps)."""
    _, _, h, w = images.shape
    ph, pw = _canvas(h, w, max_scale)
    out = []
    for i, (rh, rw, top, left) in enumerate(draws):
        resized = F.interpolate(images[i:i + 1], size=(rh, rw), mode="bilinear", align_corners=False)
        padded = F.pad(resized, (left, pw - rw - left, top, ph - rh - top), value=0.0)
        out.append(F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out).clamp(0, 1)


def random_resize_pad(images: torch.Tensor, max_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Per image: resize to a random r in [S, S*max_scale), zero-pad at a random offset to S*max_scale,
    resize back to S."""
    n, _, h, w = images.shape
    return resize_pad(images, draw_resize_pad(n, h, w, max_scale, generator), max_scale)


@DEFENSES.register("random_resize_pad")
@dataclass
class RandomResizePad(InputTransformDefense):
    """Randomly rescale the image and pad it at a random offset, so a perturbation crafted for one pixel
    grid lands on another. Randomized but differentiable: adaptive attacks differentiate through the
    real resize and pad of each draw and average over `eot_draws` fresh draws per attack step (EOT),
    the attack with which Athalye, Carlini & Wagner (ICML 2018) broke this defense."""

    title = "Random resize & pad"
    reference = "Xie et al., ICLR 2018 (arXiv 1711.01991)"
    randomized = True
    differentiable = True
    exact_gradient = True
    deviation = ("The padded image is resized back to the model's input size (the paper feeds the larger "
                 "padded image to the network; CLIP needs its fixed resolution). One draw per prediction (no ensemble "
                 "over draws).")

    max_scale: float = param(1.1, lo=1.01, hi=1.5, step=0.01, label="Max scale",
                             help="Random size drawn from [S, S x max_scale), padded to S x max_scale.")
    eot_draws: int = param(4, lo=1, hi=32, step=1, label="EOT draws (adaptive attack)",
                           help="Random draws averaged per step when an adaptive attack goes through this defense.")

    def transform(self, images, generator):
        return random_resize_pad(images, float(self.max_scale), generator)
