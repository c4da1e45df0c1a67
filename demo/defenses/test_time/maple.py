"""Multi-modal prompts (MaPLe; Khattak et al., CVPR 2023, arXiv 2210.03117), the prompts TAPT tunes.

The text context replaces the words "a photo" in "a photo of a {class}." (2 tokens). Deep prompts: in
text blocks 1..J-1 the 2 context positions are replaced by learned text prompts, and in the image tower
the 2 prompt tokens appended after the patch tokens ([CLS, patches, P0, P1], no positional embedding,
through `ln_pre`) are replaced at the input of blocks 1..J-1 by prompts that are never free parameters:
each is a linear map of the text prompt of the same depth (vision-language joint prompts, "VLJ").
Blocks from J on let the prompt tokens pass through. This follows TAPT's `adv_vlj.py` and the AdvMaPLe
prompts of MMoP it loads, which use J = 9 of ViT-B's 12 blocks.

The image forward is written out block by block (no hooks, so concurrent requests cannot see each
other's activations) and returns each block's input, the tensors whose statistics TAPT aligns.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models import classifier
from ...models.rng import local_rng
from ..base import DefenseError
from .prompt_learner import PromptLearner

N_CTX = 2
CTX_INIT = "a photo"
TEMPLATE_REST = "of a"   # the fixed words between the context and the class name


def prompt_depth(blocks: int) -> int:
    """Blocks that receive prompts: 9 of ViT-B's 12 in the official code, the same 3/4 for smaller towers
    (5 of the teaching ViT's 6)."""
    return max(1, min(blocks, math.ceil(blocks * 9 / 12)))


def check_tower(visual: nn.Module) -> None:
    """Deep visual prompts need an open_clip VisionTransformer that pools its class token."""
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool")
    if not all(hasattr(visual, n) for n in needed) or getattr(visual, "attn_pool", None) is not None:
        raise DefenseError("multi-modal prompts need a Vision Transformer image tower (this model has a "
                           f"{type(visual).__name__}); choose the teaching ViT or a ViT CLIP")
    if getattr(visual, "pool_type", "tok") != "tok" or not getattr(visual.transformer, "batch_first", True):
        raise DefenseError("multi-modal prompts need a ViT that pools its class token")


class MultiModalPrompts(nn.Module):
    """The prompt parameters: the text context, J-1 deep text prompts and J couplings text -> image."""

    def __init__(self, text_width: int, image_width: int, depth: int, ctx: torch.Tensor,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.ctx = nn.Parameter(ctx.detach().clone().float())
        deep = torch.randn(depth - 1, N_CTX, text_width, generator=generator) * 0.02
        self.deep_text = nn.Parameter(deep.to(ctx.device))
        self.couplings = nn.ModuleList(nn.Linear(text_width, image_width) for _ in range(depth))
        self.couplings.to(ctx.device)

    @property
    def depth(self) -> int:
        return len(self.couplings)

    def visual_prompts(self) -> list[torch.Tensor]:
        """(N_CTX, image width) prompts for blocks 0..J-1: block 0 from the context, the others from the
        deep text prompts."""
        sources = [self.ctx] + list(self.deep_text)
        return [proj(src) for proj, src in zip(self.couplings, sources)]

    def copy(self) -> "MultiModalPrompts":
        return copy.deepcopy(self)


def learner(clf: nn.Module) -> PromptLearner:
    """The text side: a 2-token context in place of "a photo" in "a photo of a {class}."."""
    tokenizer = getattr(clf, "tokenizer", None)
    if tokenizer is None:
        raise DefenseError("prompt tuning needs the classifier's tokenizer (build it with LoadedModel.classifier)")
    names = [f"{TEMPLATE_REST} {name}" for name in clf.classnames]
    return PromptLearner(clf.clip, tokenizer, names, CTX_INIT, N_CTX)


def fresh_prompts(clf: nn.Module, generator: torch.Generator) -> MultiModalPrompts:
    """Untrained prompts for `clf`'s model (the start of pre-training): context from "a photo", deep
    text prompts N(0, 0.02^2), couplings with PyTorch's default initialisation."""
    visual = clf.clip.visual
    check_tower(visual)
    text = learner(clf)
    # nn.Linear draws its initialisation from the global generator, which other threads share: here it
    # draws from a local one seeded from `generator` instead (the same values a seeded global one gave).
    with local_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator))):
        return MultiModalPrompts(text.width, visual.conv1.out_channels,
                                 prompt_depth(len(visual.transformer.resblocks)), text.init_context(), generator)


def text_features(text: PromptLearner, prompts: MultiModalPrompts) -> torch.Tensor:
    """(C, D) normalised class features with the context and the deep text prompts."""
    return text.text_features(prompts.ctx, deep=list(prompts.deep_text))


def encode_image(clf: nn.Module, images: torch.Tensor, prompts: MultiModalPrompts,
                 keep_inputs: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(N, D) normalised image features with the visual prompts, and the inputs of the first
    `keep_inputs` blocks ((N, L, W) each, CLS, patch and prompt tokens, before the block's LayerNorm)."""
    visual = clf.clip.visual
    check_tower(visual)
    # Counted (and stoppable) where every image-tower pass is; a backward pass reaches the prompts through it.
    classifier.record_pass(images.shape[0], torch.is_grad_enabled())
    x = visual.conv1(clf.normalize(images).to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    vp = prompts.visual_prompts()
    n = x.shape[0]
    x = visual.ln_pre(torch.cat([x, vp[0].unsqueeze(0).expand(n, -1, -1).to(x.dtype)], dim=1))
    inputs = []
    for i, block in enumerate(visual.transformer.resblocks):
        if 0 < i < len(vp):
            x = torch.cat([x[:, :-N_CTX], vp[i].unsqueeze(0).expand(n, -1, -1).to(x.dtype)], dim=1)
        if i < keep_inputs:
            inputs.append(x)
        x = block(x)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return F.normalize(pooled.float(), dim=-1), inputs


def logits(clf: nn.Module, text: PromptLearner, prompts: MultiModalPrompts, images: torch.Tensor) -> torch.Tensor:
    feats, _ = encode_image(clf, images, prompts)
    return clf.logit_scale * feats @ text_features(text, prompts).t()
