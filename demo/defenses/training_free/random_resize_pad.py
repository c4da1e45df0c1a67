"""Random resizing and padding (Xie, Wang, Zhang, Ren & Yuille, "Mitigating Adversarial Effects Through
Randomization", ICLR 2018, arXiv 1711.01991)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...registry import DEFENSES
from .input_transform import InputTransformDefense
from ..base import param


def random_resize_pad(images: torch.Tensor, max_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Per image: resize to a random r in [S, S*max_scale), zero-pad at a random offset to S*max_scale,
    resize back to S. Draws come from `generator` (CPU) so they do not depend on the device."""
    n, _, h, w = images.shape
    ph, pw = max(h + 1, int(round(h * max_scale))), max(w + 1, int(round(w * max_scale)))
    out = []
    for i in range(n):
        rh = int(torch.randint(h, ph, (1,), generator=generator))
        # Square inputs keep their aspect ratio, as in the paper (rnd x rnd).
        rw = rh if h == w and ph == pw else int(torch.randint(w, pw, (1,), generator=generator))
        top = int(torch.randint(0, ph - rh + 1, (1,), generator=generator))
        left = int(torch.randint(0, pw - rw + 1, (1,), generator=generator))
        resized = F.interpolate(images[i:i + 1], size=(rh, rw), mode="bilinear", align_corners=False)
        padded = F.pad(resized, (left, pw - rw - left, top, ph - rh - top), value=0.0)
        out.append(F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out).clamp(0, 1)


@DEFENSES.register("random_resize_pad")
@dataclass
class RandomResizePad(InputTransformDefense):
    """Randomly rescale the image and pad it at a random offset, so a perturbation crafted for one pixel
    grid lands on another. Randomized and not differentiable: adaptive attacks use BPDA with EOT
    (logits averaged over `eot_draws` fresh draws per attack step)."""

    title = "Random resize & pad"
    reference = "Xie et al., ICLR 2018 (arXiv 1711.01991)"
    randomized = True
    deviation = ("The padded image is resized back to the model's input size (the paper feeds the larger "
                 "padded image to the network; CLIP needs its fixed resolution). One draw per prediction.")

    max_scale: float = param(1.1, lo=1.01, hi=1.5, step=0.01, label="Max scale",
                             help="Random size drawn from [S, S x max_scale), padded to S x max_scale.")
    eot_draws: int = param(4, lo=1, hi=32, step=1, label="EOT draws (adaptive attack)",
                           help="Random draws averaged per step when an adaptive attack goes through this defense.")

    def transform(self, images, generator):
        return random_resize_pad(images, float(self.max_scale), generator)
