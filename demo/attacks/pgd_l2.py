"""PGD (L2): projected gradient descent with normalized-gradient steps inside an L2 ball.

Reference: Madry et al. "Towards Deep Learning Models Resistant to Adversarial Attacks". ICLR 2018.
arXiv 1706.06083.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import ATTACKS
from ._torchattacks import TorchAttack
from .base import STEP_RULE, param


@ATTACKS.register("pgd_l2")
@dataclass
class PGDL2(TorchAttack):
    """L2 PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    arXiv 1706.06083): steps along the L2-normalized gradient, projected onto the L2 ball of radius eps
    (measured in [0,1] pixel units over the whole image). The change spreads unevenly: a few pixels may
    move a lot. Runs on torchattacks.PGDL2."""

    title = "PGD (L2)"
    norm = "l2"
    reference = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018, arXiv 1706.06083"

    eps: float = param(0.5, lo=0.0, hi=10.0, step=0.05, label="epsilon (L2 budget)",
                       help="Largest L2 norm of the whole perturbation, pixels in [0,1].")
    alpha: float = param(0.1, lo=0.0, hi=5.0, step=0.01, label="step size", help="L2 length of each step.",
                         auto=STEP_RULE)
    steps: int = param(10, lo=1, hi=500, step=1, label="steps", help="Gradient steps (one forward + backward each).")
    random_start: bool = param(True, label="random start", help="Start from a random point in the L2 ball.")

    def build(self, ta, model, seed):
        return ta.PGDL2(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=self.random_start)
