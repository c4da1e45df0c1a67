"""Shared pieces of the training commands: world data stream, zero-shot evaluation, saving."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, IterableDataset

from .. import world
from ..attacks import ATTACKS
from ..models import teaching
from ..models.classifier import ZeroShotClassifier, build_text_features

log = logging.getLogger(__name__)


class WorldStream(IterableDataset):
    """An endless stream of freshly rendered (images, labels, captions) batches from one seed."""

    def __init__(self, batch_size: int, seed: int, image_size: int = teaching.IMAGE_SIZE, split: str = "seen"):
        self.batch_size, self.seed, self.image_size, self.split = batch_size, seed, image_size, split

    def __iter__(self):
        torch.set_num_threads(1)  # the training step owns the other threads
        step = 0
        while True:
            # Seeds never collide with the evaluation seeds (which are < 10_000).
            g = torch.Generator().manual_seed(10_000 + self.seed * 1_000_003 + step)
            scenes = world.sample_scenes(self.batch_size, g, self.split)
            images = world.render(scenes, self.image_size, g)
            caps, templates = world.captions(scenes, g, return_templates=True)
            yield images, scenes.labels, caps, world.caption_match(scenes, templates)
            step += 1


def world_loader(batch_size: int, seed: int, split: str = "seen") -> DataLoader:
    return DataLoader(WorldStream(batch_size, seed, split=split), batch_size=None, num_workers=1, prefetch_factor=4)


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def world_classifier(clip, tokenizer, logit_scale: float | None = None) -> ZeroShotClassifier:
    feats = build_text_features(clip, tokenizer, world.CLASSNAMES, [world.EVAL_TEMPLATE])
    scale = float(clip.logit_scale.detach().exp()) if logit_scale is None else logit_scale
    return ZeroShotClassifier(clip, teaching.MEAN, teaching.STD, feats, world.CLASSNAMES, scale)


@torch.no_grad()
def zero_shot_accuracy(clf: ZeroShotClassifier, n: int = 500, seed: int = 1, split: str = "seen", batch: int = 250) -> float:
    correct = 0
    for i in range(0, n, batch):
        images, labels, _ = world.make_batch(min(batch, n - i), seed * 1000 + i, teaching.IMAGE_SIZE, split)
        correct += int((clf(images.to(clf.device)).argmax(1).cpu() == labels).sum())
    return correct / n


def save_half(state: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> None:
    """fp16 safetensors: halves the shipped size; weights are cast back to fp32 on load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in (meta or {}).items()})


class Clock:
    def __init__(self, minutes: float | None):
        self.start, self.limit = time.time(), (minutes * 60 if minutes else None)

    @property
    def elapsed(self) -> float:
        return time.time() - self.start

    def expired(self) -> bool:
        return self.limit is not None and self.elapsed > self.limit


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE with multiple positives: every caption that truly describes an image is
    a positive for it (as in UniCL, Yang et al., CVPR 2022, arXiv 2204.03610), instead of only its own
    caption. `match[i, j]` says caption j describes image i."""
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    m = match.float()
    i2t = F.cross_entropy(logits, m / m.sum(1, keepdim=True))
    t2i = F.cross_entropy(logits.t(), (m / m.sum(0, keepdim=True)).t())
    return 0.5 * (i2t + t2i)


def progress_record(model, step: int, loss: float, seconds: float, eps: float, n: int = 200) -> dict:
    """One entry of a training log: the loss, zero-shot accuracy on seen and held-out classes, and robust
    accuracy under PGD-10 at `eps` on `n` seen images (the same images and attack seed at every entry)."""
    images, labels, _ = world.make_batch(n, 7, teaching.IMAGE_SIZE, "seen")
    images, labels = images.to(model.device), labels.to(model.device)
    adv = ATTACKS.create("pgd", eps=eps, alpha=eps / 4, steps=10)(model, images, labels, seed=0).adv_images
    with torch.no_grad():
        robust = float((model(adv).argmax(1) == labels).float().mean())
    return {"step": step, "loss": round(loss, 4), "seconds": round(seconds),
            "seen": zero_shot_accuracy(model, 500, seed=1, split="seen"),
            "held_out": zero_shot_accuracy(model, 500, seed=2, split="held_out"),
            f"pgd10_{eps * 255:.0f}": robust}
