"""The prompts TAPT starts from, and the statistics it aligns to (`python -m demo.train tapt-prompts`).

As in the official pipeline (xinwong/MMoP `trainers/advmaple.py`, then TAPT's calibration scripts):
1. AdvMaPLe: multi-modal prompts (`demo.defenses.test_time.maple`) trained with both encoders frozen on
   the cross-entropy of a batch whose second half is attacked by PGD (eps 1/255, step 1/255, 2 steps,
   random start; MMoP's "adv_half"), images augmented by random resized crops and flips.
2. The same prompts trained on clean images only (MMoP's "clean" loss).
3. For each, the mean and unbiased variance of every prompted block input (per token position and
   channel) over clean, augmented world images: TAPT's "adv" and "clean" statistics.
Deviations: the teaching world instead of 16-shot ImageNet, and a few hundred AdamW steps instead of
100 epochs of SGD (lr 0.0035), as for APT; one pass for mean and variance (the official code makes a
second pass over fresh augmentations for the variance).
"""
from __future__ import annotations

import json
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import world
from ..defenses.test_time import maple
from ..defenses.test_time.tpt import random_resized_crops
from ..models import teaching
from ..models.loading import load_model
from ..registry import ATTACKS
from .common import Clock, cosine_lr, save_half, world_loader

log = logging.getLogger(__name__)


class _Prompted(nn.Module):
    def __init__(self, clf, text, prompts):
        super().__init__()
        self.clf, self.text, self.prompts = clf, text, prompts
        self.num_classes = clf.num_classes

    def forward(self, images):
        return maple.logits(self.clf, self.text, self.prompts, images)


def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.stack([random_resized_crops(im, 1, g)[0] for im in images])


def train_prompts(clf, variant: str, steps: int, batch_size: int, lr: float, eps: float, seed: int,
                  clock: Clock, history: list) -> maple.MultiModalPrompts:
    g = torch.Generator().manual_seed(seed)
    prompts = maple.fresh_prompts(clf, g)
    text = maple.learner(clf)
    opt = torch.optim.AdamW(prompts.parameters(), lr=lr, weight_decay=0.0)
    remap = torch.full((len(world.CLASSNAMES),), -1, dtype=torch.long)
    remap[torch.tensor(world.SEEN_CLASSES)] = torch.arange(len(world.SEEN_CLASSES))
    attack = ATTACKS.create("pgd", eps=eps, alpha=eps, steps=2)
    loader = iter(world_loader(batch_size, seed + 300))
    for step in range(steps):
        images, labels, _, _ = next(loader)
        x, y = _augment(images, g), remap[labels]
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, max(1, steps // 10), lr)
        if variant == "adv":
            half = x.shape[0] // 2
            prompts.requires_grad_(False)  # the attack's gradients must not reach the prompts
            adv = attack(_Prompted(clf, text, prompts), x[half:], y[half:], seed=seed * 100_003 + step).adv_images
            prompts.requires_grad_(True)
            x = torch.cat([x[:half], adv])
        loss = F.cross_entropy(maple.logits(clf, text, prompts, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            log.info("%s prompts step %d/%d loss %.4f %.0fs", variant, step, steps, loss.item(), clock.elapsed)
    prompts.requires_grad_(False)
    history.append({"variant": variant, "steps": steps, "loss": round(loss.item(), 4), "seconds": round(clock.elapsed),
                    **evaluate(clf.model_key, prompts)})
    log.info("eval %s", history[-1])
    return prompts


@torch.no_grad()
def statistics(clf, prompts: maple.MultiModalPrompts, n: int, seed: int, batch: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, L, W) mean and unbiased variance of the prompted block inputs over n augmented world images."""
    g = torch.Generator().manual_seed(seed)
    total = total_sq = None
    for start in range(0, n, batch):
        images, _, _ = world.make_batch(min(batch, n - start), 20_000 + seed * 100 + start // batch,
                                        teaching.IMAGE_SIZE, "seen")
        _, inputs = maple.encode_image(clf, _augment(images, g), prompts, keep_inputs=prompts.depth - 1)
        x = torch.stack(inputs).double()  # (K, N, L, W)
        s, sq = x.sum(1), x.pow(2).sum(1)
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
    mean = total / n
    return mean.float(), ((total_sq - n * mean.pow(2)) / (n - 1)).clamp(min=0).float()


def evaluate(model_key: str, prompts: maple.MultiModalPrompts, eps: float = 4 / 255, n: int = 200) -> dict:
    base = load_model(model_key, "cpu")
    clf = base.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    model = _Prompted(clf, maple.learner(clf), prompts)
    out = {}
    with torch.no_grad():
        for split, seed in (("seen", 1), ("held_out", 2)):
            images, labels, _ = world.make_batch(500, seed * 1000, teaching.IMAGE_SIZE, split)
            out[split] = float((model(images).argmax(1) == labels).float().mean())
    images, labels, _ = world.make_batch(n, 7, teaching.IMAGE_SIZE, "seen")
    adv = ATTACKS.create("pgd", eps=eps, alpha=eps / 4, steps=10)(model, images, labels, seed=0).adv_images
    with torch.no_grad():
        out[f"pgd10_{eps * 255:.0f}"] = float((model(adv).argmax(1) == labels).float().mean())
    return out


def train_tapt_prompts(steps: int, batch_size: int, lr: float, eps: float, seed: int, minutes: float | None,
                       out_dir, model: str, stats_images: int = 2000) -> dict:
    import demo.attacks  # noqa: F401  (registers PGD)

    torch.manual_seed(seed)
    base = load_model(model, "cpu")
    clf = base.classifier([world.CLASSNAMES[i] for i in world.SEEN_CLASSES], [world.EVAL_TEMPLATE])
    clock, history, stats = Clock(minutes), [], {}
    for variant in ("adv", "clean"):
        prompts = train_prompts(clf, variant, steps, batch_size, lr, eps, seed, clock, history)
        stats[f"{variant}_mean"], stats[f"{variant}_var"] = statistics(clf, prompts, stats_images, seed)
        if variant == "adv":
            shipped = prompts
    meta = {"history": history, "steps": steps, "batch_size": batch_size, "lr": lr, "eps": eps, "seed": seed,
            "stats_images": stats_images,
            "command": f"python -m demo.train tapt-prompts --model {model} --steps {steps} --batch-size {batch_size}"}
    save_half(shipped.state_dict(), out_dir / "tapt_prompts.safetensors", {"training": meta})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in stats.items()}, str(out_dir / "tapt_stats.safetensors"))
    (out_dir / "tapt_prompts.json").write_text(json.dumps(meta, indent=2) + "\n")
    return history[0]
