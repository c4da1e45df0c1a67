"""Transfer (black-box) attacks: craft the adversarial image on one model, answer with another.

Papernot, McDaniel, Goodfellow, "Transferability in Machine Learning: from Phenomena to Black-Box
Attacks using Adversarial Samples", arXiv 1605.07277 (2016); Liu, Chen, Liu, Song, "Delving into
Transferable Adversarial Examples and Black-box Attacks", ICLR 2017, arXiv 1611.02770. The attacker
never queries the answering model: the image is optimised on a source model, saved as 8-bit, and handed
to the target, which classifies it with its own weights (and, in the page, its own defenses).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..attacks.base import AttackResult, ProgressFn
from ..models.loading import LoadedModel
from ..timing import Passes
from . import budget
from .inputs import InputError, check_labels, make_attack


class TransferError(InputError):
    """The source model cannot attack for the target (another input size)."""


def source_classifier(source: LoadedModel, target: LoadedModel, classnames: Sequence[str],
                      templates: Sequence[str] | None = None):
    """The source model's zero-shot classifier over the target's labels and prompts, so that "the same
    class" means the same thing on both sides. The two must take images of the same size: a transferred
    image is the source's input, pixel for pixel."""
    if source.image_size != target.image_size:
        raise TransferError(f"{source.spec.label} takes {source.image_size} px images and {target.spec.label} "
                            f"{target.image_size} px; a transfer attack needs both at the same size.")
    return source.classifier(list(classnames), templates) if templates is not None else source.classifier(list(classnames))


@dataclass
class TransferResult:
    """One transfer: adversarial images crafted on `source`, answered by `target` (probabilities per
    image over `labels`), with the source's own answer to its image for comparison."""

    source: str
    target: str
    labels: list[str]
    true_labels: list[int]
    adv_images: torch.Tensor
    attack: AttackResult
    target_clean: torch.Tensor
    target_adv: torch.Tensor
    source_clean: torch.Tensor
    source_adv: torch.Tensor
    seconds: dict = field(default_factory=dict)

    def fooled(self, probs: torch.Tensor) -> list[bool]:
        return [int(p.argmax()) != y for p, y in zip(probs, self.true_labels)]

    @property
    def fooled_source(self) -> list[bool]:
        """Per image: whether the attack fooled the model it was crafted on (white-box)."""
        return self.fooled(self.source_adv)

    @property
    def fooled_target(self) -> list[bool]:
        """Per image: whether the image also fools the answering model (it transferred)."""
        return self.fooled(self.target_adv)


def run_transfer(source: LoadedModel, target: LoadedModel, images: torch.Tensor, labels: Sequence[str],
                 true_labels: Sequence[int] | torch.Tensor, attack_name: str, attack_params: dict | None = None,
                 *, templates: Sequence[str] | None = None, seed: int = 0,
                 progress: ProgressFn | None = None) -> TransferResult:
    """Craft `attack_name` on `source` for images (N, 3, H, W) in [0,1] with their true label indices,
    then classify the quantized adversarial images with `target`. Raises InputError (or a subclass) on
    bad input, before any attack step; the cost is checked against the server's limit like any request."""
    labels = check_labels(labels)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must be an (N, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    y = torch.as_tensor(true_labels, dtype=torch.long).reshape(-1)
    if y.shape[0] != images.shape[0]:
        raise InputError(f"{images.shape[0]} images but {y.shape[0]} true labels")
    if int(y.min()) < 0 or int(y.max()) >= len(labels):
        raise InputError(f"true labels must be indices into the {len(labels)} labels")
    attack = make_attack(attack_name, attack_params or {})
    src = source_classifier(source, target, labels, templates)
    tgt = target.classifier(list(labels), templates) if templates is not None else target.classifier(list(labels))
    n = images.shape[0]
    # The attack on the source, then two forward passes per model and image.
    budget.check(source, n * (Passes(grad=attack.model_calls()) + Passes(forward=2)),
                 budget.advice(attack, [], False) + ["fewer images"])
    images = (torch.round(images.detach().float().clamp(0, 1) * 255) / 255).to(source.device)
    y = y.to(source.device)
    res = attack(src, images, y, seed=int(seed), progress=progress)
    adv = res.adv_images
    with torch.no_grad():
        answers = {name: clf(x.to(clf.device)).softmax(-1).cpu()
                   for name, clf, x in (("target_clean", tgt, images), ("target_adv", tgt, adv),
                                        ("source_clean", src, images), ("source_adv", src, adv))}
    return TransferResult(source.key, target.key, list(labels), y.tolist(), adv.cpu(), res,
                          seconds={"attack": res.timings.ms.get("attack", 0.0) / 1000}, **answers)
