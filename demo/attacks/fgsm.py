"""FGSM: one signed-gradient step of size eps.

Reference: Goodfellow, Shlens, Szegedy. "Explaining and Harnessing Adversarial Examples". ICLR 2015.
arXiv 1412.6572.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import ATTACKS
from ._torchattacks import TorchAttack
from .base import param


@ATTACKS.register("fgsm")
@dataclass
class FGSM(TorchAttack):
    """Fast Gradient Sign Method (Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
    ICLR 2015, arXiv 1412.6572): x + eps * sign(grad of the cross-entropy). One gradient pass; weak
    but instant, the classic first demo. Runs on torchattacks.FGSM."""

    title = "FGSM"
    norm = "linf"
    reference = "Goodfellow et al., Explaining and Harnessing Adversarial Examples, ICLR 2015, arXiv 1412.6572"

    eps: float = param(4 / 255, lo=0.0, hi=32 / 255, step=1 / 255, label="epsilon (L-inf budget)",
                       help="Largest change allowed per pixel and channel.", unit="/255")

    def expected_calls(self) -> int:
        return 1

    def draws_random(self) -> bool:
        return False

    def build(self, ta, model, seed):
        return ta.FGSM(model, eps=self.eps)
