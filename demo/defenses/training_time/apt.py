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
from ..base import ClassifierDefense, DefenseError, Weights
from ..text_cache import TextFeatureCache
from ..test_time.prompt_learner import PromptLearner
from .twin import twin_visual

_CTX: dict[str, torch.Tensor] = {}
_LOCK = threading.Lock()
_TEXT = TextFeatureCache()
PROMPTS = {key: model.apt_prompt for key, model in teaching.MODELS.items()}


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


def prompt_text_features(clf) -> torch.Tensor:
    """L2-normalized text features of the learned prompt for the classifier's labels, cached."""
    ctx = learned_context(getattr(clf, "model_key", None)).to(clf.device)
    return _TEXT.get(clf, lambda: F.normalize(PromptLearner.for_classifier(clf).text_features(ctx), dim=-1))


class _APTClassifier(nn.Module):
    """Robust image tower + text features of the learned prompt; differentiable in the image."""

    def __init__(self, clf, visual, text):
        super().__init__()
        self.clf, self.visual, self.text = clf, visual, text
        self.num_classes = clf.num_classes

    @property
    def device(self) -> torch.device:
        return self.clf.device

    def encode(self, images, normalize: bool = True):
        return self.clf.encode(images, visual=self.visual, normalize=normalize)

    def forward(self, images):
        return self.clf.logits_from_features(self.encode(images), self.text)


@DEFENSES.register("apt")
@dataclass
class APT(ClassifierDefense):
    title = "APT (adversarially tuned prompt)"
    trained_weights = Weights.PROMPTS
    trained_by = "python -m demo.train apt"
    reference = ("Li et al., One Prompt Word is Enough to Boost Adversarial Robustness for Pre-trained "
                 "Vision-Language Models, CVPR 2024, arXiv 2403.01849")
    deviation = ("Teaching model only. 4 context tokens initialised from 'a photo of a' and 80 AdamW steps of "
                 "64 images (paper: 16 randomly initialised tokens, SGD with lr 0.002 for 50 epochs on 16 shots "
                 "per class); the inner PGD is the paper's (3 steps of 2.67/255 at eps 4/255, against the current "
                 "prompt).")

    def classifier(self, clf) -> _APTClassifier:
        return _APTClassifier(clf, twin_visual(clf, "tecoa"), prompt_text_features(clf))

    def explain(self, clf):
        return ("the TeCoA image tower and a text prompt learned on adversarial examples beforehand",
                {"prompt": "learned context (4 tokens)", "image tower": "TeCoA"})
