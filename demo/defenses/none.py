"""No defense: the undefended classifier, so every code path is uniform."""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import DEFENSES
from .base import Defense, DefenseOutput, Paradigm


@DEFENSES.register("none")
@dataclass
class NoDefense(Defense):
    title = "None"
    paradigm = Paradigm.TRAINING_FREE

    def predict(self, clf, images, seed):
        return DefenseOutput(logits=clf(images))

    def as_module(self, clf, seed=0):
        return clf
