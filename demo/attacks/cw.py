"""Carlini-Wagner L2: minimize ||delta||^2 + c * margin loss in tanh space with Adam.

Reference: Carlini, Wagner. "Towards Evaluating the Robustness of Neural Networks". IEEE S&P 2017.
arXiv 1608.04644.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import ATTACKS
from ._torchattacks import TorchAttack
from .base import param


@ATTACKS.register("cw")
@dataclass
class CW(TorchAttack):
    """Carlini-Wagner L2 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks",
    IEEE S&P 2017, arXiv 1608.04644), as torchattacks.CW runs it: a fixed trade-off c (no binary search),
    Adam in tanh space, early stop when the objective stops falling, and the smallest successful
    perturbation kept (the clean image when none succeeds).

    Not the "CW" of the CLIP robustness papers, which is L-inf PGD on a margin loss. There is no hard
    norm bound: the attack trades size against success, so `budget` is None. kappa is in logit units
    (CLIP logits are cosine similarities times ~100). Adam calls backward(): use it only on models whose
    parameters are frozen (as every shared model here is).
    """

    title = "Carlini-Wagner (L2)"
    norm = "l2"
    reference = "Carlini & Wagner, Towards Evaluating the Robustness of Neural Networks, IEEE S&P 2017, arXiv 1608.04644"

    c: float = param(1.0, lo=1e-3, hi=1000.0, step=0.1, label="c (weight of the margin loss)",
                     help="Larger c: more success, bigger perturbation.")
    kappa: float = param(0.0, lo=0.0, hi=100.0, step=1.0, label="kappa (confidence margin, logits)",
                         help="How far past the decision boundary to push.")
    steps: int = param(50, lo=1, hi=1000, step=1, label="steps", help="Adam steps (one forward + backward each).")
    lr: float = param(0.01, lo=1e-4, hi=1.0, step=0.001, label="learning rate", help="Adam step size in tanh space.")

    @property
    def budget(self) -> float | None:
        return None

    def draws_random(self) -> bool:
        return False  # torchattacks' CW starts from the image itself

    def build(self, ta, model, seed):
        return ta.CW(model, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)
