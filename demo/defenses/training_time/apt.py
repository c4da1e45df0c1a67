"""APT: adversarial prompt tuning, a learned text context on top of a robust image tower.

Reference: Li, Guan, Qiu, Spratling. "One Prompt Word is Enough to Boost Adversarial Robustness for
Pre-trained Vision-Language Models". CVPR 2024. arXiv 2403.01849.

The context vectors (4 tokens, initialised from "a photo of a") are trained on adversarial examples
crafted on the fly against the current prompt, with both encoders frozen; the backbone is the TeCoA
image tower, as in the paper. The prompt is learned once (`python -m demo.train apt`) and then used
for any labels the user types, so only the teaching model has one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models import teaching
from ...registry import DEFENSES
from ..base import DefenseError, DefenseOutput, Paradigm, Defense
from ..test_time.prompt_learner import PromptLearner
from .twin import twin_visual

_CTX: dict[str, torch.Tensor] = {}
_LOCK = threading.Lock()
PROMPTS = {"teaching": teaching.APT_PROMPT}


def learned_context(model_key: str | None) -> torch.Tensor:
    path = PROMPTS.get(model_key or "")
    if path is None:
        raise DefenseError(f"no adversarially tuned prompt exists for model {model_key!r}; "
                           f"models with one: {', '.join(PROMPTS)}")
    with _LOCK:
        if model_key not in _CTX:
            if not path.is_file():
                raise DefenseError(f"the APT prompt file is missing: {path}")
            from safetensors.torch import load_file

            _CTX[model_key] = load_file(str(path))["ctx"].float()
        return _CTX[model_key]


class _APTClassifier(nn.Module):
    """Robust image tower + text features of the learned prompt; differentiable in the image."""

    def __init__(self, clf, visual, text):
        super().__init__()
        self.clf, self.visual, self.text = clf, visual, text
        self.num_classes = clf.num_classes

    def forward(self, images):
        return self.clf.logits_from_features(self.clf.encode(images, visual=self.visual), self.text)


@DEFENSES.register("apt")
@dataclass
class APT(Defense):
    title = "APT (adversarially tuned prompt)"
    paradigm = Paradigm.TRAINING_TIME
    reference = ("Li et al., One Prompt Word is Enough to Boost Adversarial Robustness for Pre-trained "
                 "Vision-Language Models, CVPR 2024, arXiv 2403.01849")
    deviation = ("Teaching model only: the prompt was tuned for a few hundred steps on 2 CPU cores (paper: "
                 "50 epochs); inner PGD as in the paper (3 steps at eps 4/255).")

    def _module(self, clf) -> _APTClassifier:
        ctx = learned_context(getattr(clf, "model_key", None)).to(clf.device)
        with torch.no_grad():
            text = PromptLearner.for_classifier(clf).text_features(ctx)
        return _APTClassifier(clf, twin_visual(clf, "tecoa"), F.normalize(text, dim=-1))

    def predict(self, clf, images, seed):
        return DefenseOutput(logits=self._module(clf)(images),
                             changed={"prompt": "learned context (4 tokens)", "image tower": "TeCoA"})

    def as_module(self, clf, seed=0):
        return self._module(clf)
