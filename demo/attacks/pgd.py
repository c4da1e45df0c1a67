"""PGD (L-inf): projected gradient descent on the cross-entropy, with a random start.

Reference: Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards Deep Learning Models Resistant to
Adversarial Attacks". ICLR 2018. arXiv 1706.06083.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import ATTACKS
from ._torchattacks import TorchAttack
from .base import STEP_RULE, param


@ATTACKS.register("pgd")
@dataclass
class PGD(TorchAttack):
    """L-inf PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    arXiv 1706.06083): start uniformly in the eps-ball, then `steps` signed-gradient steps of size alpha,
    each projected back into the ball and [0,1]. Runs on torchattacks.PGD."""

    title = "PGD (L-inf)"
    norm = "linf"
    reference = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018, arXiv 1706.06083"

    eps: float = param(4 / 255, lo=0.0, hi=32 / 255, step=1 / 255, label="epsilon (L-inf budget)",
                       help="Largest change allowed per pixel and channel.", unit="/255")
    alpha: float = param(1 / 255, lo=0.0, hi=16 / 255, step=0.25 / 255, label="step size",
                         help="Change per pixel per step.", unit="/255", auto=STEP_RULE)
    steps: int = param(10, lo=1, hi=500, step=1, label="steps", help="Gradient steps (one forward + backward each).")
    random_start: bool = param(True, label="random start", help="Start from a uniformly random point in the eps-ball.")

    def build(self, ta, model, seed):
        return ta.PGD(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=self.random_start)
