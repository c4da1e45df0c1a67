"""Bit-depth reduction, one of the feature squeezers of Xu, Evans & Qi, "Feature Squeezing: Detecting
Adversarial Examples in Deep Neural Networks", NDSS 2018 (arXiv 1704.01155)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...registry import DEFENSES
from .input_transform import InputTransformDefense
from ..base import param


def reduce_bit_depth(images: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2 ** int(bits) - 1
    return torch.round(images.clamp(0, 1) * levels) / levels


@DEFENSES.register("bit_depth")
@dataclass
class BitDepth(InputTransformDefense):
    """Quantize each channel to `bits` bits, x' = round(x (2^b - 1)) / (2^b - 1). A perturbation much
    smaller than one quantization level mostly rounds away. Not differentiable: adaptive attacks use BPDA."""

    title = "Bit-depth reduction"
    reference = "Xu, Evans & Qi, NDSS 2018 (arXiv 1704.01155)"

    bits: int = param(4, lo=1, hi=8, step=1, label="Bits per channel",
                      help="8 keeps 8-bit images unchanged; 3-5 bits erase perturbations of a few /255.")

    def transform(self, images, generator):
        return reduce_bit_depth(images, self.bits)
