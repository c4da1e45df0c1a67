"""FAP: few-shot adversarial prompt learning (Zhou, Xia, Lin, Han & Liu, "Few-Shot Adversarial Prompt
Learning on Vision-Language Models", NeurIPS 2024, arXiv 2403.14774; official code lionel-w2/FAP,
`trainers/fap.py`).

Multi-modal prompts learned once, from 16 images per class, on adversarial examples; both encoders stay
frozen, and a prediction is one ordinary pass with the prompts. The prompt structure is the official
code's, which differs from MaPLe's in its deeper layers:
- text: a 2-token context in place of "a photo" in "a photo of a {class}.", and at the text blocks
  1..J-1 deep text prompts that are linear maps (image width -> text width) of the deep image prompts;
- image: at block 0 the context mapped to the image width by one linear coupling, at blocks 1..J-1
  the deep image prompts themselves (free parameters, N(0, 0.02^2)), inserted as in MaPLe
  (`demo.defenses.test_time.maple`); J = 3/4 of the blocks (official: 9 of ViT-B/32's 12).
The training objective (`python -m demo.train fap`) is in `demo/train/fap.py`.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn as nn
from safetensors.torch import load_file

from ...models import teaching
from ...models.classifier import bf16_twin
from ...models.rng import local_rng
from ...registry import DEFENSES
from ..base import ClassifierDefense, DefenseError, Weights
from ..text_cache import TextFeatureCache
from ..test_time import maple

PROMPTS = {key: m.folder / "fap_prompts.safetensors" for key, m in teaching.MODELS.items()}
_LOADED: dict[tuple[str, str], "FAPPrompts"] = {}
_LOCK = threading.Lock()
_TEXT = TextFeatureCache()


class FAPPrompts(nn.Module):
    """The prompt parameters, with the interface `maple.encode_image` and `maple.text_features` read
    (`ctx`, `deep_text`, `visual_prompts()`, `depth`)."""

    def __init__(self, text_width: int, image_width: int, depth: int, ctx: torch.Tensor,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.ctx = nn.Parameter(ctx.detach().clone().float())
        self.to_image = nn.Linear(text_width, image_width)
        deep = torch.randn(depth - 1, maple.N_CTX, image_width, generator=generator) * 0.02
        self.deep_image = nn.Parameter(deep.to(ctx.device))
        # The official code clones one initialised layer, so every coupling starts from the same weights.
        one = nn.Linear(image_width, text_width)
        self.to_text = nn.ModuleList(copy.deepcopy(one) for _ in range(depth - 1))
        self.to(ctx.device)

    @property
    def depth(self) -> int:
        return len(self.to_text) + 1

    @property
    def deep_text(self) -> list[torch.Tensor]:
        return [proj(p) for proj, p in zip(self.to_text, self.deep_image)]

    def visual_prompts(self) -> list[torch.Tensor]:
        return [self.to_image(self.ctx)] + list(self.deep_image)


def fresh_prompts(clf: nn.Module, generator: torch.Generator) -> FAPPrompts:
    """Untrained prompts for `clf`'s model: context from "a photo", the rest initialised as officially."""
    visual = clf.clip.visual
    maple.check_tower(visual)
    text = maple.learner(clf)
    # nn.Linear draws from the global generator, which other threads share: here from a local one instead.
    with local_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator))):
        return FAPPrompts(text.width, visual.conv1.out_channels,
                          maple.prompt_depth(len(visual.transformer.resblocks)), text.init_context(), generator)


def learned_prompts(clf: nn.Module) -> FAPPrompts:
    """The model's trained FAP prompts (loaded once, never modified)."""
    key = getattr(clf, "model_key", None) or ""
    maple.check_tower(clf.clip.visual)
    path = PROMPTS.get(key)
    if path is None or not path.is_file():
        have = ", ".join(k for k, p in PROMPTS.items() if p.is_file()) or "none"
        raise DefenseError(f"FAP classifies with prompts learned beforehand, and model {key!r} has none "
                           f"(models with them: {have})")
    where = (key, str(clf.device))  # one copy per device: a process may hold the model on the CPU and a GPU
    with _LOCK:
        if where not in _LOADED:
            prompts = fresh_prompts(clf, torch.Generator().manual_seed(0))
            prompts.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
            _LOADED[where] = prompts.requires_grad_(False).to(clf.device)
        return _LOADED[where]


class Prompted(nn.Module):
    """The frozen model with the learned prompts; differentiable in the image. The class features do not
    depend on the image, so they are computed once per (model, labels) and shared."""

    def __init__(self, clf: nn.Module, prompts: FAPPrompts):
        super().__init__()
        self.clf, self.prompts = clf, prompts
        self.num_classes = clf.num_classes
        self.text = _TEXT.get(clf, lambda: maple.text_features(maple.learner(clf), prompts), extra=(id(prompts),))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats, _ = maple.encode_image(_in_precision(self.clf), images, self.prompts)
        return self.clf.logit_scale * feats @ self.text.t()


def _in_precision(clf: nn.Module):
    """`clf` as `maple.encode_image` reads it, with the image tower the classifier itself runs: where it
    computes in bf16, the tower's bf16 copy, and the image prompts are cast to bf16 as they are inserted.
    Run on the fp32 tower instead, FAP cost twice a bf16 pass on ViT-B/32 (docs/benchmarks.md)."""
    if getattr(clf, "precision", "fp32") != "bf16":
        return clf
    return SimpleNamespace(clip=SimpleNamespace(visual=bf16_twin(clf.clip.visual)), normalize=clf.normalize)


@DEFENSES.register("fap")
@dataclass
class FAP(ClassifierDefense):
    """Few-shot adversarial multi-modal prompts (needs a ViT image tower)."""

    title = "FAP (few-shot adversarial prompts)"
    trained_weights = Weights.PROMPTS
    trained_by = "python -m demo.train fap --model teaching-vit"
    needs_vit = True
    reference = ("Zhou et al., Few-Shot Adversarial Prompt Learning on Vision-Language Models, NeurIPS 2024, "
                 "arXiv 2403.14774")
    deviation = ("Needs a ViT image tower: offered for the teaching ViT, prompted at 5 of its 6 blocks (official: "
                 "9 of 12), trained on 16 images of each seen colour-shape pair by the official recipe "
                 "(10 epochs, batch 4, SGD lr 0.0035, 2-step PGD at 1/255, lambda 1.5); the class prompt is "
                 "'a photo of a {class}.' (the official code appends the class name after the dataset "
                 "template). Float32 (bfloat16 where the image tower runs in bf16 on a CPU), not fp16.")

    def classifier(self, clf):
        return Prompted(clf, learned_prompts(clf))

    def explain(self, clf):
        return ("text and image prompts learned beforehand on 16 images per class and attacked copies of them",
                {"prompt": "learned text and image prompts"})
