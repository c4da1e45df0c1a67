"""A CoOp-style prompt learner over an open_clip text tower (Zhou et al., IJCV 2022; used by TPT/R-TPT).

The prompt of class c is `[SOS] ctx_1 .. ctx_n <tokens of the class name> . [EOS]`, where the n context
vectors live in the token-embedding space and are learnable. With the context initialised from the
embeddings of "a photo of a", the text features equal those of the hand-written prompt
"a photo of a {class}." exactly (up to float error).

The learner holds no learnable state: `init_context()` returns a fresh tensor and
`text_features(ctx)` takes the context explicitly. Test-time tuning clones a context per request and
training-time prompt tuning keeps its own; neither can disturb the other or the shared, frozen CLIP.
The tokenized prompts and the frozen prefix/suffix embeddings are cached per (model, class names).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from ..base import DefenseError

CTX_INIT = "a photo of a"
_CACHE_SIZE = 32


class _TextTower(NamedTuple):
    """References (never copies) to the parts of an open_clip text tower that a prompt passes through."""

    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: object
    attn_mask: torch.Tensor | None
    pool_type: str
    eos_id: int | None


def text_tower(clip: nn.Module) -> _TextTower:
    """The text tower of an open_clip `CLIP` or of a `CustomTextCLIP` with a plain `TextTransformer`."""
    if hasattr(clip, "token_embedding") and hasattr(clip, "ln_final"):
        return _TextTower(clip.token_embedding, clip.positional_embedding, clip.transformer, clip.ln_final,
                          clip.text_projection, getattr(clip, "attn_mask", None),
                          getattr(clip, "text_pool_type", "argmax"), getattr(clip, "text_eos_id", None))
    text = getattr(clip, "text", None)
    # A class token or a padding mask changes how the sequence is built; a context splice would
    # silently disagree with the model's own encode_text there, so those towers are refused.
    if (text is not None and hasattr(text, "token_embedding") and getattr(text, "cls_emb", None) is None
            and not getattr(text, "use_pad_mask", False)):
        return _TextTower(text.token_embedding, text.positional_embedding, text.transformer, text.ln_final,
                          text.text_projection, getattr(text, "attn_mask", None),
                          getattr(text, "pool_type", "argmax"), getattr(text, "eos_id", None))
    raise DefenseError(
        "prompt tuning needs an open_clip transformer text tower (token embedding, transformer, ln_final); "
        f"{type(clip).__name__} does not have one"
    )


@dataclass(frozen=True)
class _Frozen:
    tokens: torch.Tensor      # (C, L) token ids, L <= context length: the pooling position is read from them
    prefix: torch.Tensor      # (C, 1, W) start-of-text embedding
    suffix: torch.Tensor      # (C, L - 1 - n_ctx, W) class name, ".", end-of-text, padding up to L
    init_ctx: torch.Tensor    # (n_ctx, W) embeddings of the initial words (zeros for random init)


_CACHE: "OrderedDict[tuple, tuple[weakref.ref, _Frozen]]" = OrderedDict()
_LOCK = threading.Lock()


def _build(tower: _TextTower, tokenizer, classnames: Sequence[str], ctx_init: str | None, n_ctx: int) -> _Frozen:
    words = ctx_init if ctx_init else " ".join(["X"] * n_ctx)
    device = tower.token_embedding.weight.device
    tokens = tokenizer([f"{words} {name}." for name in classnames]).to(device)
    ctx_tokens = tokenizer([words]).to(device)[0, 1:1 + n_ctx]
    # A tokenizer that merges across word boundaries or has no start token would put the context
    # somewhere else than positions 1..n; the splice would then encode a different sentence.
    if tokens.shape[1] < n_ctx + 2 or not bool((tokens[:, 1:1 + n_ctx] == ctx_tokens).all()):
        raise DefenseError(f"the tokenizer does not place {words!r} at positions 1..{n_ctx} of every prompt")
    tokens = tokens[:, :_used_length(tower, tokens)]
    with torch.no_grad():
        emb = tower.token_embedding(tokens)
        init = tower.token_embedding(ctx_tokens) if ctx_init else torch.zeros_like(emb[0, :n_ctx])
    return _Frozen(tokens, emb[:, :1].detach(), emb[:, 1 + n_ctx:].detach(), init.detach())


def _used_length(tower: _TextTower, tokens: torch.Tensor) -> int:
    """How many leading positions can change the pooled feature.

    Under a causal mask nothing after the pooled (end-of-text) position reaches it, so the padding
    can be dropped: the features are unchanged and the text tower runs on ~10 instead of 77 tokens.
    """
    if tower.attn_mask is None or tower.pool_type not in ("argmax", "eos"):
        return tokens.shape[1]
    pooled_at = tokens.argmax(-1) if tower.pool_type == "argmax" else (tokens == tower.eos_id).int().argmax(-1)
    return int(pooled_at.max()) + 1


def _count_tokens(tokenizer, words: str) -> int:
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        raise DefenseError("prompt tuning needs open_clip's CLIP tokenizer (a model with a BPE `encode`)")
    return len(encode(words))


class PromptLearner:
    """Learnable-context prompts for `classnames` over the text tower of `clip`.

    Args:
        clip: an open_clip CLIP (shared, frozen; only read).
        tokenizer: the model's open_clip tokenizer.
        classnames: the C class names, in logit order.
        ctx_init: words whose embeddings initialise the context (their token count is n_ctx), or None
            for CoOp's random initialisation with `n_ctx` placeholder tokens.
        n_ctx: number of context vectors when `ctx_init` is None (must match it otherwise).
    """

    def __init__(self, clip: nn.Module, tokenizer, classnames: Sequence[str], ctx_init: str | None = CTX_INIT,
                 n_ctx: int | None = None):
        if not classnames:
            raise DefenseError("prompt tuning needs at least one class name")
        self.tower = text_tower(clip)
        self.classnames = list(classnames)
        self.ctx_init = ctx_init
        if ctx_init:
            counted = _count_tokens(tokenizer, ctx_init)
            if n_ctx is not None and n_ctx != counted:
                raise DefenseError(f"{ctx_init!r} is {counted} tokens, not n_ctx={n_ctx}")
            n_ctx = counted
        elif not n_ctx or n_ctx < 1:
            raise DefenseError("random context initialisation needs n_ctx >= 1")
        self.n_ctx = int(n_ctx)
        self._frozen = self._lookup(clip, tokenizer)

    @classmethod
    def for_classifier(cls, clf: nn.Module, ctx_init: str | None = CTX_INIT, n_ctx: int | None = None) -> "PromptLearner":
        tokenizer = getattr(clf, "tokenizer", None)
        if tokenizer is None:
            raise DefenseError("prompt tuning needs the classifier's tokenizer (build it with LoadedModel.classifier)")
        return cls(clf.clip, tokenizer, clf.classnames, ctx_init, n_ctx)

    def _lookup(self, clip: nn.Module, tokenizer) -> _Frozen:
        weight = self.tower.token_embedding.weight
        key = (id(clip), str(weight.device), weight.dtype, tuple(self.classnames), self.ctx_init, self.n_ctx)
        with _LOCK:
            hit = _CACHE.get(key)
            # ids are reused after garbage collection; the weak reference tells a stale entry apart.
            if hit is not None and hit[0]() is clip:
                _CACHE.move_to_end(key)
                return hit[1]
        frozen = _build(self.tower, tokenizer, self.classnames, self.ctx_init, self.n_ctx)
        with _LOCK:
            _CACHE[key] = (weakref.ref(clip), frozen)
            _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return frozen

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def width(self) -> int:
        return self._frozen.prefix.shape[-1]

    @property
    def device(self) -> torch.device:
        return self._frozen.prefix.device

    def init_context(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh (n_ctx, W) float32 context: the initial words' embeddings, or N(0, 0.02²) draws."""
        if self.ctx_init:
            return self._frozen.init_ctx.float().clone()
        ctx = torch.randn(self.n_ctx, self.width, generator=generator, device="cpu") * 0.02
        return ctx.to(self.device)

    def text_features(self, ctx: torch.Tensor, deep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """L2-normalized class text features for context `ctx`, differentiable w.r.t. `ctx`.

        ctx (n_ctx, W) -> (C, D); ctx (B, n_ctx, W), one context per sample -> (B, C, D).
        `deep`: (n_ctx, W) prompts that replace the context positions at the input of text blocks 1, 2, ...
        (MaPLe's deep text prompts; those beyond the tower's depth have no text block to enter).
        """
        single = ctx.dim() == 2
        if single:
            ctx = ctx.unsqueeze(0)
        if ctx.shape[1:] != (self.n_ctx, self.width):
            raise DefenseError(f"context must be (n_ctx={self.n_ctx}, width={self.width}), got {tuple(ctx.shape)}")
        t, fr = self.tower, self._frozen
        batch, n_cls = ctx.shape[0], self.num_classes
        dtype = t.transformer.get_cast_dtype() if hasattr(t.transformer, "get_cast_dtype") else fr.prefix.dtype
        x = torch.cat([
            fr.prefix.unsqueeze(0).expand(batch, -1, -1, -1),
            ctx.unsqueeze(1).expand(-1, n_cls, -1, -1).to(fr.prefix.dtype),
            fr.suffix.unsqueeze(0).expand(batch, -1, -1, -1),
        ], dim=2).flatten(0, 1).to(dtype)
        length = x.shape[1]
        x = x + t.positional_embedding[:length].to(dtype)
        mask = t.attn_mask[:length, :length] if t.attn_mask is not None else None
        if deep:
            x = self._deep_forward(x, mask, deep)
        else:
            x = t.transformer(x, attn_mask=mask)
        x = t.ln_final(x)
        x = text_global_pool(x, fr.tokens.repeat(batch, 1), t.pool_type, eos_token_id=t.eos_id)
        if t.text_projection is not None:
            x = t.text_projection(x) if isinstance(t.text_projection, nn.Linear) else x @ t.text_projection
        feats = F.normalize(x.float(), dim=-1).view(batch, n_cls, -1)
        return feats[0] if single else feats

    def _deep_forward(self, x: torch.Tensor, mask: torch.Tensor | None, deep: list[torch.Tensor]) -> torch.Tensor:
        if not getattr(self.tower.transformer, "batch_first", True):
            raise DefenseError("deep text prompts need a batch-first open_clip text transformer")
        n = self.n_ctx
        for i, block in enumerate(self.tower.transformer.resblocks):
            if 0 < i <= len(deep):
                prompt = deep[i - 1].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], prompt, x[:, 1 + n:]], dim=1)
            x = block(x, attn_mask=mask)
        return x
