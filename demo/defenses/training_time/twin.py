"""Shared code of the weight-swap defenses: classify with a robust twin's image tower.

The robust twins (TeCoA, FARE) fine-tune only the image tower; the text tower is the base model's, so
the base classifier's cached text features are reused and only the image embedding changes. Only the
twin's image tower is kept in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn as nn

from ...models.loading import ModelLoadError, load_image_tower
from ...models.zoo import ZOO
from ..base import Defense, DefenseError, DefenseOutput, Paradigm, label_names


TWIN_TITLES = {"tecoa": "TeCoA", "fare": "FARE", "pmg_aft": "PMG-AFT"}


def twin_visual(clf: nn.Module, which: str) -> nn.Module:
    """The image tower of the `which` twin of the model behind `clf` (loaded once, cached)."""
    key = getattr(clf, "model_key", None)
    spec = ZOO.get(key) if key else None
    twin = spec.twins.get(which) if spec else None
    method = TWIN_TITLES.get(which, which)
    if twin is None:
        raise DefenseError(f"no {method} weights exist for model {key or 'unknown'!r}; "
                           f"models with them: {', '.join(k for k, s in ZOO.items() if which in s.twins)}")
    try:
        return load_image_tower(twin, clf.device)
    except ModelLoadError as exc:
        raise DefenseError(f"the {method} checkpoint for {spec.label} could not be loaded: {exc}") from exc


@dataclass
class RobustTwinDefense(Defense):
    """Swap in the adversarially fine-tuned image tower. Prediction costs one pass, like the base model;
    the price was paid at training time. Attacking it adaptively means attacking the robust model itself,
    so `as_module` is that classifier, exactly."""

    paradigm = Paradigm.TRAINING_TIME
    twin: ClassVar[str] = ""

    def predict(self, clf, images, seed):
        robust = clf.with_visual(twin_visual(clf, self.twin))
        logits = robust(images)
        method = TWIN_TITLES.get(self.twin, self.twin)
        summary = [f"Classified with the {method} image tower, made robust beforehand by adversarial training; "
                   f"one ordinary pass, and it says {name!r}." for name in label_names(clf, logits.argmax(-1))]
        return DefenseOutput(logits=logits, changed={"image tower": ZOO[clf.model_key].twins[self.twin]},
                             summary=summary)

    def as_module(self, clf, seed=0):
        return clf.with_visual(twin_visual(clf, self.twin))
