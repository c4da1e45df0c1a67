"""JPEG re-compression (Dziugaite, Ghahramani & Roy 2016, arXiv 1608.00853; Guo, Rana, Cisse & van der
Maaten, "Countering Adversarial Images using Input Transformations", ICLR 2018, arXiv 1711.00117)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ...registry import DEFENSES
from .input_transform import InputTransformDefense
from ..base import param


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode each image with PIL at `quality`: exactly the pixels a saved JPEG would hold."""
    out = []
    arrays = (images.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for arr in arrays:
        buf = io.BytesIO()
        Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        decoded = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
        out.append(torch.from_numpy(decoded.copy()))
    stacked = torch.stack(out).permute(0, 3, 1, 2).to(images.device, torch.float32) / 255.0
    return stacked.to(images.dtype)


@DEFENSES.register("jpeg")
@dataclass
class JPEG(InputTransformDefense):
    """Re-compress the image as JPEG: the 8x8 DCT quantization discards much of the high-frequency
    detail in which small adversarial perturbations live. Not differentiable: adaptive attacks use BPDA."""

    title = "JPEG compression"
    reference = "Dziugaite et al. 2016 (arXiv 1608.00853); Guo et al., ICLR 2018 (arXiv 1711.00117)"

    quality: int = param(75, lo=1, hi=100, step=1, label="JPEG quality",
                         help="Lower quality removes more detail (and more of the perturbation), and costs clean accuracy.")

    def transform(self, images, generator):
        return jpeg_roundtrip(images, self.quality)
