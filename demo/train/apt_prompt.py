"""Adversarial prompt tuning (APT) of the teaching model's text context.

Li et al., "One Prompt Word is Enough to Boost Adversarial Robustness for Pre-trained VLMs", CVPR 2024,
arXiv 2403.01849. Both encoders are frozen (the image tower is the TeCoA one, APT's robust backbone);
only 4 context vectors, initialised from "a photo of a", are learned. Each step crafts PGD examples
against the current prompt ("on-the-fly", the paper's default: eps 4/255, step 2.67/255, 3 steps) and
minimizes their cross-entropy. Deviation: a few hundred AdamW steps instead of 50 epochs of SGD.
"""
from __future__ import annotations

import json
import logging

import torch
import torch.nn.functional as F

from .. import world
from ..models.loading import load_model
from ..registry import ATTACKS
from ..defenses.test_time.prompt_learner import PromptLearner
from ..defenses.training_time.apt import _APTClassifier
from ..defenses.training_time.twin import twin_visual
from .common import Clock, cosine_lr, progress_record, save_half, world_loader

log = logging.getLogger(__name__)


def train_apt(steps: int, batch_size: int, lr: float, eps: float, seed: int, minutes: float | None, out_path,
              eval_every: int, model: str = "teaching") -> dict:
    torch.manual_seed(seed)
    base = load_model(model, "cpu")
    seen = [world.CLASSNAMES[i] for i in world.SEEN_CLASSES]
    clf = base.classifier(seen, [world.EVAL_TEMPLATE])
    learner = PromptLearner.for_classifier(clf)
    visual = twin_visual(clf, "tecoa")
    ctx = learner.init_context().requires_grad_(True)
    opt = torch.optim.AdamW([ctx], lr=lr, weight_decay=0.0)
    remap = torch.full((len(world.CLASSNAMES),), -1, dtype=torch.long)
    remap[torch.tensor(world.SEEN_CLASSES)] = torch.arange(len(seen))
    inner = ATTACKS.create("pgd", eps=eps, alpha=eps * 2 / 3, steps=3)  # APT's on-the-fly attack
    loader = iter(world_loader(batch_size, seed + 200))
    clock, history = Clock(minutes), []
    for step in range(steps):
        images, labels, _, _ = next(loader)
        y = remap[labels]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, max(1, steps // 10), lr)
        with torch.no_grad():
            text_now = F.normalize(learner.text_features(ctx), dim=-1)
        adv = inner(_APTClassifier(clf, visual, text_now), images, y, seed=seed * 100_003 + step).adv_images
        with torch.no_grad():
            feats = clf.encode(adv, visual=visual)
        loss = F.cross_entropy(clf.logits_from_features(feats, learner.text_features(ctx)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            log.info("apt step %d/%d loss %.4f %.0fs", step, steps, loss.item(), clock.elapsed)
        done = step + 1 == steps or clock.expired()
        if (step + 1) % eval_every == 0 or done:
            history.append(_evaluate(base, visual, ctx.detach(), step + 1, loss.item(), clock.elapsed, eps))
            log.info("eval %s", history[-1])
            meta = {"history": history, "steps": step + 1, "batch_size": batch_size, "lr": lr, "eps": eps, "seed": seed}
            save_half({"ctx": ctx.detach()}, out_path, {"training": meta})
            out_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        if done:
            break
    return history[-1]


def _evaluate(base, visual, ctx, step, loss, seconds, eps, n=200) -> dict:
    clf = base.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    with torch.no_grad():
        text = F.normalize(PromptLearner.for_classifier(clf).text_features(ctx), dim=-1)
    return progress_record(_APTClassifier(clf, visual, text), step, loss, seconds, eps, n)
