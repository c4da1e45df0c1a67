"""Random noise of the same size as an attack: the baseline that shows the perturbation is chosen.

Reference: Goodfellow, Shlens, Szegedy. "Explaining and Harnessing Adversarial Examples". ICLR 2015,
arXiv 1412.6572, section 3: a linear score w.x changes by eps * ||w||_1 under the perturbation
eps * sign(w), but a random perturbation of the same size is nearly orthogonal to w in high dimension,
so its change stays near zero. The same paper reports that random noise barely moves a classifier
that FGSM fools.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import ATTACKS
from ._torchattacks import check_labels
from .base import Attack, AttackError, param

KINDS = ("corners", "gaussian")


def noise_delta(shape: tuple[int, ...], eps: float, kind: str, generator: torch.Generator,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Random perturbations of size eps: "corners" puts each pixel and channel at +eps or -eps (a random
    corner of the L-inf ball, the largest perturbation the budget allows, like FGSM's but unaimed);
    "gaussian" draws i.i.d. normal noise and scales each image's noise to the corners' L2 norm,
    eps * sqrt(pixels), so both kinds carry the same energy."""
    if kind not in KINDS:
        raise AttackError(f"noise kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "corners":
        return (torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1) * eps
    z = torch.randn(shape, generator=generator, device=device)
    target = eps * math.sqrt(math.prod(shape[1:]))
    return z * (target / z.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *([1] * (len(shape) - 1)))


@ATTACKS.register("noise")
@dataclass
class Noise(Attack):
    """Random noise at the attack's budget (Goodfellow et al., "Explaining and Harnessing Adversarial
    Examples", ICLR 2015, arXiv 1412.6572): the control experiment for every attack. "corners": each
    pixel moves by +-eps at random (the L-inf budget used to the full, as FGSM and PGD use it, but in a
    random direction); "gaussian": normal noise with the same L2 norm as the corners (its largest pixel
    changes exceed eps; it is bounded in energy, not per pixel).

    One gradient pass at the clean image is spent to report, per image, how much the loss would rise
    to first order under this noise (gradient . noise) and under the aimed sign step of the same size
    (eps * ||gradient||_1): the gap is the paper's linear explanation of why noise does nothing.
    """

    title = "Random noise (baseline)"
    norm = "linf"
    supports_targeted = False
    reference = "Goodfellow et al., Explaining and Harnessing Adversarial Examples, ICLR 2015, arXiv 1412.6572"

    eps: float = param(4 / 255, lo=0.0, hi=32 / 255, step=1 / 255, label="epsilon (size of the noise)",
                       help="Each pixel moves by this much (corners), or the noise has the same total energy (gaussian).",
                       unit="/255")
    kind: str = param("corners", label="noise kind (corners or gaussian)",
                      help="corners: every pixel +-epsilon at random; gaussian: normal noise with the same L2 norm.")

    @property
    def budget(self) -> float | None:
        # Gaussian noise of the corners' L2 norm has no per-pixel bound: its largest changes exceed eps.
        return self.eps if self.kind == "corners" else None

    def check(self, model, images, labels, target) -> None:
        super().check(model, images, labels, target)
        if self.kind not in KINDS:
            raise AttackError(f"noise kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def perturb(self, model, images, labels, target, generator, progress):
        labels = check_labels(self.title, labels, images.shape[0], getattr(model, "num_classes", None)).to(images.device)
        x = images.clone().requires_grad_(True)
        clean_loss = F.cross_entropy(model(x), labels, reduction="sum")
        grad, = torch.autograd.grad(clean_loss, x)
        delta = noise_delta(tuple(images.shape), float(self.eps), self.kind, generator, images.device)
        adv = (images + delta).clamp(0, 1)
        with torch.no_grad():
            loss = F.cross_entropy(model(adv), labels)
        moved = (adv - images).flatten(1)
        g = grad.flatten(1)
        history = [{"step": 1, "loss": float(loss), "clean_loss": float(clean_loss) / images.shape[0],
                    "linear_gain_noise": (g * moved).sum(1).tolist(),
                    "linear_gain_sign": (float(self.eps) * g.abs().sum(1)).tolist()}]
        if progress:
            progress(1.0, f"{self.kind} noise drawn")
        return adv, history
