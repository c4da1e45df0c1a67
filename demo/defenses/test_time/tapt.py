"""TAPT: test-time adversarial prompt tuning (Wang, Chen, Zhang, Chen & Ma, "TAPT: Test-Time Adversarial
Prompt Tuning for Robust Inference in Vision-Language Models", CVPR 2025, arXiv 2411.13136; official
code xinwong/TAPT, `trainers/adv_vlj.py`).

Per test image, starting from adversarially pre-trained multi-modal prompts (`maple.py`, trained by
`python -m demo.train tapt-prompts`): make 64 views (the image and 63 random resized crops with flips),
keep the 10% with the lowest prediction entropy, and take one AdamW step (lr 5e-4, weight decay 0.01) on
every prompt parameter (context, deep text prompts and the text-to-image couplings) to minimise

    H(mean of the kept views' distributions) + (100 / J) * (0.5 * A_adv + 0.5 * A_clean),

where A is, summed over the inputs of the first J-1 image blocks, 0.5 * L1(mean) + 0.5 * L1(variance)
between the kept views' token statistics (per token position and channel, over the views) and stored
statistics. The stored ones were computed on clean world images through the adversarially trained
prompts ("adv") and through prompts trained on clean images only ("clean"): two checkpoints, as in the
official calibration scripts, not adversarial images. The image alone is then classified with the tuned
prompts. Prompts and optimizer state start from the pre-trained values for every image.

Deviations: the official code runs its statistics over ImageNet's training set and pre-trains the
prompts for 100 epochs of 16-shot ImageNet; here both come from the teaching world (see the training
log). The official code computes in mixed precision; here float32. The prompt depth keeps the official
3/4 of the blocks (5 of the teaching ViT's 6, 9 of ViT-B's 12).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from ...models import teaching
from ...registry import DEFENSES
from ...timing import Passes, Timings, timer
from ..base import Defense, DefenseError, DefenseOutput, Paradigm, Weights, label_names, param
from . import maple
from .tpt import TPT, _TunedModule, entropy, kept_views, marginal_entropy, random_resized_crops

ASSETS = {key: (m.folder / "tapt_prompts.safetensors", m.folder / "tapt_stats.safetensors")
          for key, m in teaching.MODELS.items()}
_LOADED: dict[tuple[str, str], tuple[maple.MultiModalPrompts, dict[str, torch.Tensor]]] = {}
_LOCK = threading.Lock()


def pretrained(clf: nn.Module) -> tuple[maple.MultiModalPrompts, dict[str, torch.Tensor]]:
    """The model's adversarially pre-trained prompts and its stored statistics (loaded once, never
    modified: every image tunes a copy)."""
    key = getattr(clf, "model_key", None) or ""
    maple.check_tower(clf.clip.visual)
    paths = ASSETS.get(key)
    if paths is None or not all(p.is_file() for p in paths):
        have = ", ".join(k for k, ps in ASSETS.items() if all(p.is_file() for p in ps)) or "none"
        raise DefenseError(f"TAPT starts from adversarially pre-trained prompts, and model {key!r} has none "
                           f"(models with them: {have})")
    where = (key, str(clf.device))  # one copy per device: a process may hold the model on the CPU and a GPU
    with _LOCK:
        if where not in _LOADED:
            prompts = maple.fresh_prompts(clf, torch.Generator().manual_seed(0))
            prompts.load_state_dict({k: v.float() for k, v in load_file(str(paths[0])).items()})
            prompts.requires_grad_(False)
            stats = {k: v.float().to(clf.device) for k, v in load_file(str(paths[1])).items()}
            _LOADED[where] = (prompts.to(clf.device), stats)
        return _LOADED[where]


def token_stats(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block input (N, L, W): mean and biased variance over the N images -> (K, L, W) each."""
    if not inputs:  # a one-block tower has no prompted block input to align
        return torch.zeros(0), torch.zeros(0)
    stacked = torch.stack(inputs)
    mean = stacked.mean(1)
    return mean, (stacked - mean.unsqueeze(1)).pow(2).mean(1)


def alignment(mean: torch.Tensor, var: torch.Tensor, target_mean: torch.Tensor, target_var: torch.Tensor) -> torch.Tensor:
    """Sum over the K block inputs of 0.5 * L1(mean) + 0.5 * L1(var), each L1 averaged over tokens and channels."""
    terms = [0.5 * F.l1_loss(mean[i], target_mean[i]) + 0.5 * F.l1_loss(var[i], target_var[i])
             for i in range(mean.shape[0])]
    return torch.stack(terms).sum() if terms else mean.new_zeros(())


@DEFENSES.register("tapt")
@dataclass
class TAPT(Defense):
    """Test-time adversarial prompt tuning of multi-modal prompts (needs a ViT image tower)."""

    title = "TAPT (test-time adversarial prompt tuning)"
    paradigm = Paradigm.TEST_TIME
    trained_weights = Weights.PROMPTS
    trained_by = "python -m demo.train tapt-prompts --model teaching-vit"
    needs_vit = True
    randomized = True
    reference = ("Wang et al., TAPT: Test-Time Adversarial Prompt Tuning for Robust Inference in VLMs, "
                 "CVPR 2025 (arXiv 2411.13136)")
    deviation = ("Needs a ViT image tower and pre-trained prompts: offered for the teaching ViT, whose "
                 "prompts and statistics come from the teaching world (official: 100 epochs of 16-shot "
                 "ImageNet, statistics over ImageNet's training set). Its starting prompts were trained "
                 "adversarially for 150 AdamW steps against 2-step PGD at 1/255, the paper's budget (official: "
                 "AdvMaPLe, 100 epochs of SGD), so at larger budgets they start below what they were made for. Prompt depth 3/4 of the blocks, as the "
                 "official 9 of 12. Computed in float32, not mixed precision.")

    views: int = param(64, lo=2, hi=128, step=1, label="Views", help="The image plus random resized crops (paper: 64).")
    selection: float = param(0.1, lo=0.01, hi=1.0, step=0.01, label="Confident fraction",
                             help="Fraction of lowest-entropy views used by both losses (paper: 0.1).")
    lr: float = param(5e-4, lo=1e-5, hi=1e-1, step=1e-5, label="Learning rate", help="AdamW step size (paper: 5e-4).")
    steps: int = param(1, lo=1, hi=8, step=1, label="Steps", help="Tuning steps per image (paper: 1).")
    align_weight: float = param(100.0, lo=0.0, hi=1000.0, step=1.0, label="Alignment weight",
                                help="Weight of the statistics alignment, divided by the prompt depth (paper: 100).")
    gamma: float = param(0.5, lo=0.0, hi=1.0, step=0.05, label="Adversarial share",
                         help="Share of the adversarially trained prompts' statistics in the alignment (paper: 0.5).")
    eot_draws: int = param(1, lo=1, hi=16, step=1, label="EOT draws (adaptive attack)",
                           help="Independent sets of views averaged per step when an adaptive attack goes through "
                                "the adaptation (each step already draws fresh views).")
    adapt: bool = param(True, label="Adapt at test time",
                        help="Off: the pre-trained (adversarially trained) prompts alone, TAPT's starting point.")

    def tune(self, clf: nn.Module, image: torch.Tensor, generator: torch.Generator) -> tuple[maple.MultiModalPrompts, dict]:
        """One image (3, H, W): a tuned copy of the pre-trained prompts, and facts to display."""
        start, stats = pretrained(clf)
        if not self.adapt:  # the starting prompts as they are: deterministic, no views drawn
            with torch.no_grad():
                first = int(maple.logits(clf, maple.learner(clf), start, image.unsqueeze(0)).argmax())
            return start, {"initial_prediction": first, "prompt_shift": 0.0}
        prompts = start.copy().requires_grad_(True)
        text = maple.learner(clf)
        opt = torch.optim.AdamW(prompts.parameters(), lr=self.lr, weight_decay=0.01)
        views = torch.cat([image.unsqueeze(0), random_resized_crops(image.detach(), self.views - 1, generator)])
        keep, depth = kept_views(self.views, self.selection), prompts.depth
        info: dict = {}
        with torch.enable_grad():
            for step in range(self.steps):
                feats, inputs = maple.encode_image(clf, views, prompts, keep_inputs=depth - 1)
                logits = clf.logit_scale * feats @ maple.text_features(text, prompts).t()
                if step == 0:  # the views are chosen once, with the pre-trained prompts (official code)
                    ent = entropy(logits.detach())
                    selected = ent.argsort(stable=True)[:keep]
                    info["initial_prediction"] = int(logits[0].argmax())
                    info["selected"] = selected.tolist()
                loss_ent = marginal_entropy(logits[selected].unsqueeze(0))[0]
                mean, var = token_stats([x[selected] for x in inputs])
                align = (self.gamma * alignment(mean, var, stats["adv_mean"], stats["adv_var"])
                         + (1 - self.gamma) * alignment(mean, var, stats["clean_mean"], stats["clean_var"]))
                loss = loss_ent + self.align_weight / depth * align
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if step == 0:
                    info.update(entropy_before=float(loss_ent.detach()), alignment_before=float(align.detach()))
                opt.step()
        prompts.requires_grad_(False)
        info["prompt_shift"] = float(sum((a - b).pow(2).sum() for a, b in
                                         zip(prompts.parameters(), start.parameters())).sqrt())
        return prompts, info

    def run(self, clf: nn.Module, images: torch.Tensor, generator: torch.Generator,
            differentiable: bool = False, timings: Timings | None = None) -> tuple[torch.Tensor, dict]:
        """Logits (B, C); `differentiable` keeps the graph from `images` to the logits with the tuned
        prompts held constant (the adaptation itself is not differentiated)."""
        timings = timings if timings is not None else Timings()
        text, out, facts = maple.learner(clf), [], {}
        for image in images:
            with timer("tune", timings, images.device):
                prompts, info = self.tune(clf, image.detach(), generator)
            with timer("readout", timings, images.device):
                with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
                    out.append(maple.logits(clf, text, prompts, image.unsqueeze(0)))
            for k, v in info.items():
                facts.setdefault(k, []).append(v)
        return torch.cat(out), facts

    # TPT's episode (seeded views, `run`, then a summary per image); `describe` says what TAPT tuned.
    predict = TPT.predict

    def describe(self, i: int, kept: int, before: str, after: str, facts: dict) -> str:
        if not self.adapt:
            return f"Classified the image with the pre-trained prompts, not adapted: it says {after!r}."
        steps = f"{self.steps} step" + ("s" if self.steps > 1 else "")
        return (f"Made {self.views} views, kept the {kept} most confident, and took {steps} on the text and image "
                f"prompts to make their averaged prediction more confident and their feature statistics closer to "
                f"the stored ones (the prompts moved by {facts['prompt_shift'][i]:.3f}). With the pre-trained "
                f"prompts it said {before!r}; tuned, it says {after!r}.")

    def predict_passes(self):
        return self.steps * Passes(batched_grad=self.views) + Passes(forward=1)

    def adaptive_passes(self):
        return self.eot_draws * (self.steps * Passes(batched_grad=self.views) + Passes(grad=1))

    # TPT's BPDA module: each call tunes as `predict` does (views from seed + call number), then
    # classifies the input differentiably with the tuned prompts held constant.
    module = _TunedModule

    def as_module(self, clf: nn.Module, seed: int = 0) -> nn.Module:
        self.check()
        pretrained(clf)  # a model without prompts is refused before the attack starts
        return super().as_module(clf, seed)

