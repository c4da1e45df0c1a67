"""APGD-DLR: APGD on the Difference of Logits Ratio loss (scale-invariant).

Reference: Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks". ICML 2020. arXiv 2003.01690.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import ATTACKS
from .apgd_ce import APGDCE


@ATTACKS.register("apgd_dlr")
@dataclass
class APGDDLR(APGDCE):
    """APGD (Croce & Hein, ICML 2020, arXiv 2003.01690) with the DLR loss
    -(z_y - max_{j!=y} z_j) / (z_(1) - z_(3)): the margin divided by the gap between the largest and
    third-largest logit, so rescaling the logits (CLIP multiplies cosines by ~100) cannot hide the
    gradient. That needs at least 3 labels. The official default is 100 steps; 10 here.
    Runs on torchattacks.APGD(loss="dlr")."""

    title = "APGD-DLR"
    min_classes = 3
    min_classes_why = "the DLR loss divides by the gap between the largest and third-largest logit"
    loss: ClassVar[str] = "dlr"
