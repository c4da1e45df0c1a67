"""R-TPT: robust test-time prompt tuning (Sheng et al., CVPR 2025, arXiv 2504.11195; code TomSheng21/R-TPT).

Two changes to TPT:

1. Pointwise entropy. TPT's marginal entropy H(mean p_i) equals the mean per-view entropy minus a
   diversity (mutual-information) term; under attack, rewarding diverse views works against the goal.
   R-TPT drops that term and minimises the mean per-view entropy of the 10% most confident views.
2. Reliability-based weighted ensembling. Adversarial perturbations are fragile under cropping, so
   views whose (pre-tuning) image features agree with many other views are trusted more: a view's
   reliability is the mean of its top-k cosine similarities to the other views (k = min(20, N-1)),
   the weights are softmax(reliability / 0.01), and the prediction is the weighted sum of all views'
   logits under the tuned prompt.

Adaptive path (`as_module`): BPDA through the adaptation, as for TPT; here the ensemble over the views
(crops, similarities, weights and logits) stays differentiable, so the attack gets the gradient of the
whole readout with the tuned prompt held constant, with fresh view draws at every call.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import DEFENSES
from ..base import DefenseError, Paradigm, param
from .tpt import TPT, entropy


@DEFENSES.register("rtpt")
@dataclass
class RTPT(TPT):
    """R-TPT: TPT with pointwise entropy and a reliability-weighted ensemble over the views."""

    title = "R-TPT (robust test-time prompt tuning)"
    paradigm = Paradigm.TEST_TIME
    randomized = True
    reference = ("Sheng, Liang, Wang, He, Improving Adversarial Robustness of VLMs through Test-Time Prompt "
                 "Tuning (R-TPT), CVPR 2025 (arXiv 2504.11195)")
    deviation = ("Views are random resized crops with flips, the paper's ImageNet setting (no AugMix), cut "
                 "from the 8-bit image at the model's resolution as the official code does for adversarial "
                 "images. At least 2 views are always kept. A view's own similarity is excluded by position "
                 "(the official code masks every similarity >= 1, which can miss in floating point). "
                 "On a CPU the app starts 224 px models at 32 views (with 64, a full comparison on ViT-B/32 "
                 "takes over 10 s on 2 cores); the teaching model and GPUs get 64.")

    top_k: int = param(20, lo=1, hi=127, step=1, label="Reliability neighbours",
                       help="Top-k similarities averaged into a view's reliability (paper: 20; at most views - 1).")
    temperature: float = param(0.01, lo=1e-3, hi=1.0, step=1e-3, label="Weight temperature",
                               help="Softmax temperature of the view weights (paper: 0.01).")
    # The two halves of the method, to measure what each contributes (the paper runs both).
    tune: bool = param(True, label="Tune the prompt",
                       help="Off: the hand-written prompt, untuned (the vote alone).")
    vote: bool = param(True, label="Reliability-weighted vote",
                       help="Off: the tuned prompt classifies the full image alone (the tuning alone).")

    @property
    def view_grad(self) -> bool:
        # the vote reads every view, so an adaptive attack needs gradients through all of them
        return bool(self.vote)

    def check(self) -> None:
        super().check()
        if self.vote and self.top_k > self.views - 1:
            raise DefenseError(f"{self.title}: Reliability neighbours ({self.top_k}) must be fewer than the views "
                               f"({self.views}): a view is compared with the {self.views - 1} others. "
                               f"Lower it to {self.views - 1} or use more views.")

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        """(b, k, C) -> (b,): mean per-view entropy of the selected views (no diversity term)."""
        return entropy(logits).mean(1)

    def view_weights(self, feats: torch.Tensor) -> torch.Tensor:
        """(b, V, D) view features -> (b, V) ensemble weights that sum to 1 per image."""
        f = F.normalize(feats, dim=-1)
        sim = f @ f.transpose(1, 2)
        v = sim.shape[1]
        self_mask = torch.eye(v, dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(self_mask, float("-inf"))
        reliability = sim.topk(min(self.top_k, v - 1), dim=-1).values.mean(-1)  # check() keeps top_k < v
        return (reliability / self.temperature).softmax(-1)

    def adapt(self, clf: nn.Module, learner, feats: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.tune:
            return super().adapt(clf, learner, feats)
        b = feats.shape[0]
        with torch.no_grad():
            text = learner.text_features(learner.init_context().unsqueeze(0)).expand(b, -1, -1)
            logits = clf.logit_scale * torch.einsum("bvd,bcd->bvc", feats, text)
        return text, {"initial_prediction": logits[:, 0].argmax(-1).tolist(), "ctx_shift": [0.0] * b}

    def describe(self, i: int, kept: int, before: str, after: str, facts: dict) -> str:
        if not (self.tune and self.vote):
            tuned = (f"tuned the prompt on the {kept} most confident views" if self.tune
                     else "kept the hand-written prompt")
            read = ("averaged all views' predictions, trusting views that agree with many others" if self.vote
                    else "classified the full image alone")
            return f"Made {self.views} views, {tuned}, then {read}. It first said {before!r}; now it says {after!r}."
        weights = facts.get("view_weights", [[]])[i]
        top = max(weights) if weights else float("nan")
        steps = f"{self.steps} step" + ("s" if self.steps > 1 else "")
        return (f"Made {self.views} views (the image and {self.views - 1} random crops), kept the {kept} most "
                f"confident, and took {steps} on the text prompt to make each of them more confident (the prompt "
                f"moved by {facts['ctx_shift'][i]:.3f}). Then it averaged all {self.views} views' predictions, "
                f"trusting views that agree with many others (the most trusted view got {top:.0%} of the weight). "
                f"Before tuning it said {before!r}; now it says {after!r}.")

    def readout(self, clf: nn.Module, feats: torch.Tensor, text: torch.Tensor, info: dict | None) -> torch.Tensor:
        if not self.vote:
            return super().readout(clf, feats, text, info)
        view_logits = clf.logit_scale * torch.einsum("bvd,bcd->bvc", feats, text)
        weights = self.view_weights(feats)
        if info is not None:
            info["view_weights"] = weights.detach().tolist()
        return torch.einsum("bv,bvc->bc", weights, view_logits)
