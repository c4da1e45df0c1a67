"""TPT: test-time prompt tuning (Shu et al., NeurIPS 2022, arXiv 2209.07511; official code azshue/TPT).

Per test image: build N views (the image itself plus N-1 random resized crops with random flips, the
paper's ImageNet-family augmentation), classify them with the learnable prompt, keep the 10% of views
with the lowest prediction entropy, and take one AdamW step (lr 5e-3) on the 4 context vectors to
minimise the entropy of the selected views' *averaged* distribution. The original view is then
classified with the tuned prompt. The context is cloned per image and thrown away afterwards
(episodic), so requests never see each other's tuning.

The image tower is frozen and the views do not change during tuning, so every view is encoded once
without gradients; only the text tower is differentiated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ...registry import DEFENSES
from ...timing import Passes, Timings, timer
from ..base import Defense, DefenseModule, DefenseOutput, Paradigm, label_names, param
from .prompt_learner import CTX_INIT, PromptLearner

# Views per encoder call: bounds memory for large batches without changing any result.
_VIEW_BATCH = 256


def random_resized_crops(image: torch.Tensor, n: int, generator: torch.Generator,
                         scale: tuple[float, float] = (0.08, 1.0),
                         ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """n random-resized-crop + horizontal-flip views of one (3, H, W) image, each resized back to (H, W).

    The crop parameters follow torchvision's RandomResizedCrop (area fraction in `scale`, log-uniform
    aspect ratio, 10 tries, then a centre crop) but come from `generator`, so a seed fixes them.
    Cropping and bilinear resizing are differentiable, which the adaptive attack path relies on.
    """
    _, h, w = image.shape
    area, log_r = h * w, (math.log(ratio[0]), math.log(ratio[1]))
    views = []
    for _ in range(n):
        u = torch.rand(10, 4, generator=generator)
        for t in range(10):
            target = area * (scale[0] + (scale[1] - scale[0]) * float(u[t, 0]))
            aspect = math.exp(log_r[0] + (log_r[1] - log_r[0]) * float(u[t, 1]))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = int(float(u[t, 2]) * (h - ch + 1)), int(float(u[t, 3]) * (w - cw + 1))
                break
        else:
            ar = w / h
            cw, ch = (w, round(w / ratio[0])) if ar < ratio[0] else (round(h * ratio[1]), h) if ar > ratio[1] else (w, h)
            cw, ch = min(cw, w), min(ch, h)
            top, left = (h - ch) // 2, (w - cw) // 2
        crop = image[:, top:top + ch, left:left + cw].unsqueeze(0)
        view = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False,
                                               antialias=ch > h or cw > w)[0]
        if float(torch.rand(1, generator=generator)) < 0.5:
            view = view.flip(-1)
        views.append(view)
    return torch.stack(views)


def suggested_views(image_size: int, device_type: str, precision: str = "fp32") -> int:
    """The views the app starts with for a model: the paper's 64, except on a CPU running a model larger
    than the 128 px teaching model in fp32. Measured on 2 cores with ViT-B/32 (224 px, docs/benchmarks.md):
    in fp32, R-TPT with 64 views takes 5.1-5.7 s and the default comparison 8.8 s, 32 views bring it to
    6.3 s; with the bf16 image tower 64 views fit (4.0 s for the whole comparison). Any count can still
    be chosen."""
    return 64 if device_type == "cuda" or image_size <= 128 or precision == "bf16" else 32


def kept_views(views: int, selection: float) -> int:
    """How many of `views` the confidence selection keeps: int(views * selection) as in the official code
    (6 of 64), but never fewer than 2: with one view TPT's averaged entropy is that view's own entropy,
    and R-TPT's objective would equal TPT's."""
    return min(views, max(2, int(views * selection)))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(b, k, C) -> (b,): entropy of the mean of the k views' distributions (computed in log space)."""
    logp = logits.log_softmax(-1)
    avg = torch.logsumexp(logp, dim=1) - math.log(logits.shape[1])
    avg = avg.clamp(min=torch.finfo(avg.dtype).min)
    return -(avg.exp() * avg).sum(-1)


class _TunedModule(DefenseModule):
    """The adaptive-attack path: BPDA through the adaptation.

    Each forward tunes the prompt exactly as `predict` does, without tracking gradients to the image
    (the tuned context is treated as a constant, the straight-through view of the adaptation), then
    classifies the input differentiably with the tuned text features: the image itself for TPT, the
    reliability-weighted views for R-TPT (crops are differentiable, so gradients reach every view).

    Randomness: call i draws its views from seed + i, so the first call equals `predict(seed)` and an
    iterative attack sees fresh draws at every step (EOT across iterations); the defense's `eot_draws` > 1
    also averages the logits of that many draws within one call, at that many times the cost.
    """

    def __init__(self, defense: TPT, clf: nn.Module, seed: int):
        super().__init__(defense, clf, seed)
        self.eot_samples = max(1, int(defense.eot_draws))
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outs = []
        for _ in range(self.eot_samples):
            generator = torch.Generator().manual_seed(self.seed + self.calls)
            self.calls += 1
            outs.append(self.defense.run(self.clf, images, generator, differentiable=True)[0])
        return torch.stack(outs).mean(0)


@DEFENSES.register("tpt")
@dataclass
class TPT(Defense):
    """Test-time prompt tuning; `as_module` gives the adaptive path (see `_TunedModule`)."""

    title = "TPT (test-time prompt tuning)"
    paradigm = Paradigm.TEST_TIME
    randomized = True
    module = _TunedModule
    reference = "Shu et al., Test-Time Prompt Tuning for Zero-Shot Generalization in VLMs, NeurIPS 2022 (arXiv 2209.07511)"
    deviation = ("Views are random resized crops with flips (the paper's ImageNet setting; its AugMix views "
                 "for fine-grained datasets are not offered), cut from the image at the model's resolution: "
                 "an attack only exists at that resolution, and R-TPT crops its 8-bit adversarial image the "
                 "same way, whereas TPT's clean-image setting crops the full-resolution original. At least 2 "
                 "views are always kept. Computed in float32, not mixed precision. "
                 "On a CPU the app starts 224 px models at 32 views (with 64, a full comparison on ViT-B/32 "
                 "takes over 10 s on 2 cores); the teaching model and GPUs get 64.")
    view_grad: ClassVar[bool] = False   # whether the adaptive path needs gradients through all views

    views: int = param(64, lo=2, hi=128, step=1, label="Views",
                       help="The image plus random resized crops (paper: 64).")
    selection: float = param(0.1, lo=0.01, hi=1.0, step=0.01, label="Confident fraction",
                             help="Fraction of views with the lowest entropy that the loss uses (paper: 0.1).")
    lr: float = param(5e-3, lo=1e-4, hi=1e-1, step=1e-4, label="Learning rate", help="AdamW step size (paper: 5e-3).")
    steps: int = param(1, lo=1, hi=8, step=1, label="Steps", help="Tuning steps per image (paper: 1).")
    eot_draws: int = param(1, lo=1, hi=16, step=1, label="EOT draws (adaptive attack)",
                           help="Independent sets of views averaged per step when an adaptive attack goes through "
                                "the adaptation (each step already draws fresh views).")

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        """(b, k, C) logits of the selected views -> (b,) loss: TPT's marginal entropy."""
        return marginal_entropy(logits)

    def readout(self, clf: nn.Module, feats: torch.Tensor, text: torch.Tensor, info: dict | None) -> torch.Tensor:
        """Final logits from view features (b, V, D; view 0 is the image) and tuned text (b, C, D)."""
        return clf.logit_scale * torch.einsum("bd,bcd->bc", feats[:, 0], text)

    def make_views(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, H, W) -> (B, V, 3, H, W); view 0 is the image itself, as in the official code."""
        out = [torch.cat([img.unsqueeze(0), random_resized_crops(img, self.views - 1, generator)]) for img in images]
        return torch.stack(out)

    def adapt(self, clf: nn.Module, learner: PromptLearner, feats: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Tune one cloned context per image on constant view features (b, V, D); returns the tuned
        text features (b, C, D), detached, and per-image facts to display."""
        b, v = feats.shape[:2]
        ctx = learner.init_context().unsqueeze(0).repeat(b, 1, 1).requires_grad_(True)
        init = ctx.detach().clone()
        # Adam's moments are per element, so one optimizer over the (b, n, W) stack is b independent
        # optimizers: the images of a batch do not influence each other.
        opt = torch.optim.AdamW([ctx], lr=self.lr)
        keep = kept_views(v, self.selection)
        info: dict = {}
        with torch.enable_grad():
            for step in range(self.steps):
                logits = clf.logit_scale * torch.einsum("bvd,bcd->bvc", feats, learner.text_features(ctx))
                if step == 0:
                    ent = entropy(logits.detach())
                    # As in the official code the views are chosen once, with the initial prompt.
                    selected = ent.argsort(dim=1, stable=True)[:, :keep]
                    info["view_entropy"] = ent.tolist()
                    info["selected"] = selected.tolist()
                    info["initial_prediction"] = logits[:, 0].argmax(-1).tolist()
                picked = logits.gather(1, selected.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
                loss = self.objective(picked)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                if step == 0:
                    info["loss_before"] = loss.detach().tolist()
                    info["ctx_grad_norm"] = ctx.grad.flatten(1).norm(dim=1).tolist()
                opt.step()
        info["ctx_shift"] = (ctx.detach() - init).flatten(1).norm(dim=1).tolist()
        with torch.no_grad():
            return learner.text_features(ctx.detach()), info

    def run(self, clf: nn.Module, images: torch.Tensor, generator: torch.Generator,
            differentiable: bool = False, timings: Timings | None = None) -> tuple[torch.Tensor, dict]:
        """Logits (B, C) and display facts; `differentiable` keeps the graph from `images` to the logits
        with the tuned prompt held constant (the adaptation itself is not differentiated)."""
        timings = timings if timings is not None else Timings()
        learner = PromptLearner.for_classifier(clf, CTX_INIT)
        chunk = max(1, _VIEW_BATCH // self.views)
        logits, facts = [], {}
        for start in range(0, images.shape[0], chunk):
            x = images[start:start + chunk]
            with timer("encode views", timings, x.device):
                track = differentiable and self.view_grad
                views = self.make_views(x if track else x.detach(), generator)
                flat = views.flatten(0, 1)
                if track:
                    feats = clf.encode(flat).view(*views.shape[:2], -1)
                else:
                    with torch.no_grad():
                        feats = clf.encode(flat.detach()).view(*views.shape[:2], -1)
            with timer("tune", timings, x.device):
                text, info = self.adapt(clf, learner, feats.detach())
            with timer("readout", timings, x.device):
                if differentiable and not self.view_grad:
                    feats = clf.encode(x).unsqueeze(1)
                logits.append(self.readout(clf, feats, text, info))
            for k, val in info.items():
                facts.setdefault(k, []).extend(val)
        return torch.cat(logits), facts

    def predict(self, clf, images, seed):
        self.check()
        timings = Timings()
        generator = torch.Generator().manual_seed(int(seed))
        logits, facts = self.run(clf, images, generator, timings=timings)
        kept = kept_views(self.views, self.selection)
        facts.update(adapted=True, views=self.views, kept=kept)
        before = label_names(clf, facts["initial_prediction"])
        after = label_names(clf, logits.argmax(-1))
        summary = [self.describe(i, kept, b, a, facts) for i, (b, a) in enumerate(zip(before, after))]
        return DefenseOutput(logits=logits.detach(), changed=facts, timings=timings, summary=summary)

    def describe(self, i: int, kept: int, before: str, after: str, facts: dict) -> str:
        """One image's plain-language account of the adaptation."""
        steps = f"{self.steps} step" + ("s" if self.steps > 1 else "")
        return (f"Made {self.views} views (the image and {self.views - 1} random crops), kept the {kept} most "
                f"confident, and took {steps} on the text prompt to make their averaged prediction more "
                f"confident (the prompt moved by {facts['ctx_shift'][i]:.3f}). Before tuning it said {before!r}; "
                f"with the tuned prompt it says {after!r}.")

    def predict_passes(self):
        return Passes(batched_forward=self.views)

    def adaptive_passes(self):
        # The views of every call are encoded again; the readout differentiates the image (TPT) or all
        # views (R-TPT, `view_grad`).
        if self.view_grad:
            return self.eot_draws * Passes(batched_grad=self.views)
        return self.eot_draws * Passes(batched_forward=self.views, grad=1)
