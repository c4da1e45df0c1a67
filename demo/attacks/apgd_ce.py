"""APGD-CE: PGD with an adaptive step size and momentum, on the cross-entropy.

Reference: Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks". ICML 2020. arXiv 2003.01690.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import ATTACKS
from ._torchattacks import TorchAttack
from .base import param


@ATTACKS.register("apgd_ce")
@dataclass
class APGDCE(TorchAttack):
    """APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020, arXiv 2003.01690) with the cross-entropy loss: starts with a step
    of 2*eps, halves it at checkpoints when the loss stops improving, uses momentum 0.75 and keeps the
    best point. Only images the model classifies correctly are attacked; the others are returned
    unchanged. The official default is 100 steps; 10 here keeps the demo interactive on a CPU.
    Untargeted only (the paper's targeted variant picks its own targets). Runs on torchattacks.APGD.
    """

    title = "APGD-CE"
    norm = "linf"
    supports_targeted = False
    reference = ("Croce & Hein, Reliable evaluation of adversarial robustness with an ensemble of diverse "
                 "parameter-free attacks, ICML 2020, arXiv 2003.01690")
    loss: ClassVar[str] = "ce"

    eps: float = param(4 / 255, lo=0.0, hi=32 / 255, step=1 / 255, label="epsilon (L-inf budget)",
                       help="Largest change allowed per pixel and channel.", unit="/255")
    steps: int = param(10, lo=1, hi=1000, step=1, label="steps",
                       help="Gradient steps; the official default is 100.")

    def expected_calls(self) -> int:
        return self.steps + 2  # an accuracy check, the starting point, then one call per step

    def build(self, ta, model, seed):
        return ta.APGD(model, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, seed=seed, loss=self.loss)
