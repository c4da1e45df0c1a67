"""JPEG re-compression (Dziugaite, Ghahramani & Roy 2016, arXiv 1608.00853; Guo, Rana, Cisse & van der
Maaten, "Countering Adversarial Images using Input Transformations", ICLR 2018, arXiv 1711.00117)."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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


# The example quantization tables of the JPEG standard (ITU-T T.81, Annex K), which libjpeg and PIL scale
# by the quality setting.
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 6
_CHROMA += [99] * (64 - len(_CHROMA))


def quant_table(base: list[int], quality: int) -> torch.Tensor:
    """libjpeg's quality scaling of a base table (8, 8)."""
    q = max(1, min(100, int(quality)))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return torch.tensor([min(255, max(1, (b * scale + 50) // 100)) for b in base], dtype=torch.float32).view(8, 8)


def _dct_matrix() -> torch.Tensor:
    k, n = torch.arange(8.0).view(8, 1), torch.arange(8.0).view(1, 8)
    m = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m  # orthonormal: blocks -> m @ block @ m.T


def soft_round(x: torch.Tensor) -> torch.Tensor:
    """Shin & Song's rounding surrogate: round(x) + (x - round(x))^3, equal to rounding at integers and
    with a non-zero gradient between them."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _blocks_quantized(ch: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N, H, W) channel, H and W multiples of 8 -> DCT, quantize (soft), dequantize, inverse DCT."""
    n, h, w = ch.shape
    m = _dct_matrix().to(ch)
    blocks = ch.view(n, h // 8, 8, w // 8, 8).transpose(2, 3)
    coef = m @ blocks @ m.T
    coef = soft_round(coef / table.to(ch)) * table.to(ch)
    return (m.T @ coef @ m).transpose(2, 3).reshape(n, h, w)


def differentiable_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """A differentiable approximation of JPEG compression (Shin & Song, "JPEG-resistant Adversarial
    Images", NeurIPS 2017 MLSec workshop): RGB -> YCbCr, 2x2 chroma averaging (PIL's 4:2:0 default),
    8x8 DCT, quantization with `soft_round`, and back, the chroma upsampled bilinearly like libjpeg's
    triangle filter. Close to PIL's JPEG (about 1.6/255 mean difference at quality 75 on the teaching
    world), not bit-exact: PIL's integer DCT, chroma filter and clamping differ."""
    n, _, h, w = images.shape
    ph, pw = -h % 16, -w % 16
    x = F.pad(images * 255.0, (0, pw, 0, ph), mode="replicate")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b - 128
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    luma, chroma = quant_table(_LUMA, quality), quant_table(_CHROMA, quality)
    y = _blocks_quantized(y, luma) + 128
    sub = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    sub = torch.stack([_blocks_quantized(sub[:, i], chroma) for i in range(2)], 1)
    cb, cr = F.interpolate(sub, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (rgb[..., :h, :w] / 255.0).clamp(0, 1)


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

    def adaptive_variants(self) -> dict:
        # BPDA (identity backward) is the weakest approximation of JPEG; the differentiable one is the
        # usual stronger one. Evaluations run both and keep the per-image worst case.
        return {"differentiable JPEG": _JPEGThroughApproximation(quality=self.quality)}


class _JPEGThroughApproximation(JPEG):
    """JPEG whose adaptive path keeps the real compression's output in the forward pass and takes the
    gradient of `differentiable_jpeg`: the attacker sees what the defense classifies and a gradient
    that knows about the quantization and chroma subsampling. Not registered: an attack path only."""

    exact_gradient = True

    def transform(self, images, generator):
        real = jpeg_roundtrip(images, self.quality)
        if not (torch.is_grad_enabled() and images.requires_grad):
            return real
        approx = differentiable_jpeg(images, self.quality)
        return approx + (real - approx).detach()
