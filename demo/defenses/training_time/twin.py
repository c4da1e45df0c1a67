"""Shared code of the weight-swap defenses: classify with a robust twin's image tower.

The robust twins (TeCoA, FARE, PMG-AFT) fine-tune only the image tower; the text tower is the base
model's, so the base classifier's cached text features are reused and only the image embedding changes.
Only the twin's image tower is kept in memory. A twin is found in the zoo under the defense's name: the
teaching models list every `visual_<name>.safetensors` in their folders, and hub models name theirs. A
teaching model's tower is trained by `python -m demo.train <name>` (demo/train/robust.py: the recipe and
its deviations); hub models use published checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ...models.loading import ModelLoadError, load_image_tower
from ...models.zoo import ZOO
from ...registry import DEFENSES
from ..base import ClassifierDefense, DefenseError, Weights


# How the teaching models' robust towers were trained, said in the UI next to the published recipe.
TEACHING_RECIPE = ("Teaching model: 90 AdamW steps of 64 images at eps 4/255 with a 3-step inner PGD of 2/255 "
                   "and no momentum (the published recipe: 20k steps of 128 ImageNet images, 10-step PGD of 1/255 "
                   "with momentum 0.9). Hub models use the published checkpoints.")


class _TrainingCommand:
    """`python -m demo.train <name>`: the command that trains a robust tower is named after its defense."""

    def __get__(self, obj, cls) -> str:
        return f"python -m demo.train {cls.name}"


def twin_visual(clf: nn.Module, which: str) -> nn.Module:
    """The image tower of the `which` twin of the model behind `clf` (loaded once, cached)."""
    key = getattr(clf, "model_key", None)
    spec = ZOO.get(key) if key else None
    twin = spec.twins.get(which) if spec else None
    defense = DEFENSES.get(which)
    method = defense.method()
    if twin is None:
        raise DefenseError(f"no {method} weights exist for model {key or 'unknown'!r}; "
                           f"models with them: {', '.join(k for k, s in ZOO.items() if which in s.twins)} "
                           f"(a teaching model's are trained by `{defense.trained_by}`)")
    try:
        return load_image_tower(twin, clf.device)
    except ModelLoadError as exc:
        raise DefenseError(f"the {method} checkpoint for {spec.label} could not be loaded: {exc}") from exc


@dataclass
class RobustTwinDefense(ClassifierDefense):
    """Swap in the adversarially fine-tuned image tower. Prediction costs one pass, like the base model;
    the price was paid at training time. Subclasses set facts only (title, reference, a deviation where
    their teaching recipe differs), no fields, so they need no @dataclass of their own."""

    trained_weights = Weights.IMAGE_TOWER
    trained_by = _TrainingCommand()
    deviation = TEACHING_RECIPE

    def classifier(self, clf):
        return clf.with_visual(twin_visual(clf, self.name))

    def explain(self, clf):
        return (f"the {self.method()} image tower, made robust beforehand by adversarial training",
                {"image tower": ZOO[clf.model_key].twins[self.name]})
