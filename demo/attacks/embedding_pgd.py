"""Embedding-space L-inf PGD without labels: push the image embedding away from a reference embedding.

Reference: Schlarmann, Singh, Croce, Hein. "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision
Embeddings for Robust Large Vision-Language Models". ICML 2024. arXiv 2402.12336 (FARE's inner
maximization).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..registry import ATTACKS
from .base import STEP_RULE, Attack, AttackError, ProgressFn, param


def embedding_pgd(
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    reference: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator,
    progress: ProgressFn | None = None,
    history: list | None = None,
) -> torch.Tensor:
    """Maximize ||encode_fn(x + delta) - reference||_2^2 over ||delta||_inf <= eps, x + delta in [0,1].

    encode_fn maps images to raw (unnormalized) embeddings; it may be trainable: gradients are taken
    with respect to the input only, so no parameter accumulates a `.grad`. The start is uniform in the
    eps-ball from `generator`; each step moves by alpha * sign(gradient) and projects back.
    Appends {"step", "loss"} (mean squared distance before the step) to `history` when given.
    Returns the detached adversarial images (not quantized).
    """
    images = images.detach()
    reference = reference.detach()
    noise = torch.rand(images.shape, generator=generator, device=generator.device, dtype=images.dtype)
    delta = (noise.to(images.device) * 2 - 1) * eps
    delta = (images + delta).clamp(0, 1) - images
    for i in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            # Summed over the batch so each image's gradient is its own; the sign ignores the scale.
            dist = (encode_fn(images + delta) - reference).pow(2).sum(dim=1)
            grad, = torch.autograd.grad(dist.sum(), delta)
        with torch.no_grad():
            delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            delta = (images + delta).clamp(0, 1) - images
        if history is not None:
            history.append({"step": i, "loss": float(dist.detach().mean())})
        if progress is not None:
            progress((i + 1) / steps, f"step {i + 1}/{steps}")
    return (images + delta).detach()


@ATTACKS.register("embedding_pgd")
@dataclass
class EmbeddingPGD(Attack):
    """Label-free L-inf PGD in embedding space (FARE's inner maximization; Schlarmann et al., "Robust CLIP:
    Unsupervised Adversarial Fine-Tuning of Vision Embeddings for Robust Large Vision-Language Models",
    ICML 2024, arXiv 2402.12336). It moves the unnormalized image embedding as far as it can from the clean
    image's embedding, so it needs no labels and no text: whatever the labels, the image stops looking like
    itself to the encoder. Loss per step: mean squared L2 distance of the embeddings."""

    title = "Embedding PGD (label-free)"
    norm = "linf"
    needs_labels = False
    supports_targeted = False
    reference = ("Schlarmann et al., Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision Embeddings for "
                 "Robust Large Vision-Language Models, ICML 2024, arXiv 2402.12336")

    eps: float = param(4 / 255, lo=0.0, hi=32 / 255, step=1 / 255, label="epsilon (L-inf budget)",
                       help="Largest change allowed per pixel and channel.", unit="/255")
    alpha: float = param(1 / 255, lo=0.0, hi=16 / 255, step=0.25 / 255, label="step size",
                         help="Change per pixel per step.", unit="/255", auto=STEP_RULE)
    steps: int = param(10, lo=1, hi=500, step=1, label="steps", help="Gradient steps (one forward + backward each).")

    def check(self, model, images, labels, target) -> None:
        super().check(model, images, labels, target)
        if not callable(getattr(model, "encode", None)):
            raise AttackError(f"{self.title} attacks the image embedding, and this model or defense gives none to "
                              "attack (it turns images into label scores only). Run it oblivious, or choose a "
                              "label-based attack (PGD, APGD) for adaptive mode.")

    def perturb(self, model, images, labels, target, generator, progress):
        with torch.no_grad():
            reference = model.encode(images, normalize=False)
        history: list[dict] = []
        adv = embedding_pgd(lambda x: model.encode(x, normalize=False), images, reference,
                            self.eps, self.alpha, self.steps, generator, progress, history)
        return adv, history
