"""Zero-shot CLIP classifier: images in [0,1] -> logits, with CLIP's normalization inside."""
from __future__ import annotations

import copy
import threading
import weakref
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..timing import record_pass

# Pretrained CLIPs learn exp(logit_scale) close to 100; TeCoA and PMG-AFT clamp it there too.
MAX_LOGIT_SCALE = 100.0


class ZeroShotClassifier(nn.Module):
    """normalize -> encode_image -> L2-normalize -> scale * cosine with cached class text features.

    The wrapped CLIP is shared and read-only: its parameters never require grad, so attacks get input
    gradients without touching (or racing on) the shared weights.

    Args:
        clip: an open_clip CLIP model (only `encode_image` is used here).
        mean, std: CLIP's per-channel normalization, applied inside `forward`.
        text_features: (C, D) L2-normalized class embeddings.
        classnames: the C class names, in the order of `text_features`.
        logit_scale: multiplier of cosine similarities.
        precision: "fp32", or "bf16" to run the image tower as a bfloat16 copy of itself (`bf16_twin`;
            inputs, embeddings and gradients stay fp32 at this boundary). About 2x faster for ViT-B/32 on
            CPUs with native bf16 (docs/benchmarks.md; `demo.models.loading.precision_for`). A copy rather
            than autocast: autocast re-casts every weight on every call and, through torch's
            MultiheadAttention on CPU, ran no faster than fp32.
    """

    def __init__(
        self,
        clip: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        text_features: torch.Tensor,
        classnames: Sequence[str],
        logit_scale: float,
        precision: str = "fp32",
    ):
        super().__init__()
        self.clip = clip
        # On the text features' device, which is the model's: a GPU model's inputs meet them there.
        device = text_features.device
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("text_features", text_features.detach(), persistent=False)
        self.classnames = list(classnames)
        self.logit_scale = float(min(logit_scale, MAX_LOGIT_SCALE))
        self.precision = precision
        self.training = False  # the shared CLIP is in eval mode; `eval()` would walk all its submodules

    @property
    def device(self) -> torch.device:
        return self.text_features.device

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def encode(self, images: torch.Tensor, visual: nn.Module | None = None, normalize: bool = True) -> torch.Tensor:
        """Image embeddings (L2-normalized unless `normalize=False`); `visual` swaps in another tower."""
        record_pass(images.shape[0], torch.is_grad_enabled() and images.requires_grad)
        tower = visual if visual is not None else self.clip.visual
        if self.precision == "bf16":
            feats = bf16_twin(tower)(self.normalize(images).to(torch.bfloat16)).float()
        else:
            feats = tower(self.normalize(images))
        return F.normalize(feats, dim=-1) if normalize else feats

    def logits_from_features(self, features: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        text = self.text_features if text_features is None else text_features
        return self.logit_scale * F.normalize(features, dim=-1) @ text.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.encode(images))

    def with_visual(self, visual: nn.Module) -> "ZeroShotClassifier":
        """The same head (text features, scale) over another image tower."""
        return _VisualSwap(self, visual)


class _VisualSwap(ZeroShotClassifier):
    def __init__(self, base: ZeroShotClassifier, visual: nn.Module):
        nn.Module.__init__(self)
        self.clip = base.clip
        self.visual = visual
        self.register_buffer("mean", base.mean, persistent=False)
        self.register_buffer("std", base.std, persistent=False)
        self.register_buffer("text_features", base.text_features, persistent=False)
        self.classnames = base.classnames
        self.logit_scale = base.logit_scale
        self.precision = base.precision
        self.training = False
        for attr in ("model_key", "tokenizer", "templates"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def encode(self, images: torch.Tensor, visual: nn.Module | None = None, normalize: bool = True) -> torch.Tensor:
        return super().encode(images, visual if visual is not None else self.visual, normalize)


_BF16_TWINS: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_BF16_LOCK = threading.Lock()


def bf16_twin(tower: nn.Module) -> nn.Module:
    """A frozen bfloat16 copy of an image tower, made once per tower and shared (read-only) by requests."""
    with _BF16_LOCK:
        twin = _BF16_TWINS.get(tower)
        if twin is None:
            twin = copy.deepcopy(tower).to(torch.bfloat16).eval().requires_grad_(False)
            _BF16_TWINS[tower] = twin
    return twin


@torch.no_grad()
def build_text_features(clip: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(C, D) class embeddings: each template filled with the class name, encoded, normalized, averaged."""
    device = next(clip.parameters()).device
    feats = []
    for name in classnames:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = F.normalize(clip.encode_text(tokens), dim=-1).mean(0)
        feats.append(F.normalize(emb, dim=-1))
    return torch.stack(feats)
