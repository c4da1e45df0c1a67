"""FAP's prompts (`python -m demo.train fap`), by the official few-shot recipe (lionel-w2/FAP,
`trainers/fap.py`, `scripts/Adv/fap/few_shot.sh` with `vit_b32_ep10_batch4_2ctx_notransform.yaml`):

- data: 16 images of each seen class, fixed for the run, no augmentation; 10 epochs in batches of 4;
- attack, per batch: PGD from a uniform random start, 2 steps of 1/255 at eps 1/255, maximising
  KL(p_clean || p_adv) (the official `attack_pgd` with `train_trades`, which "cos" selects);
- loss: CE(clean logits, y) + 1.5 * mean_i[ KL(p_clean,i || p_adv,i) * (1 + cos(f_clean,i, f_adv,i)) ],
  gradients through both branches, f the normalised image features;
- SGD, momentum 0.9, weight decay 5e-4 (Dassl's defaults), lr 0.0035 on a cosine over the epochs after
  one warm-up epoch at a constant 1e-5, stepped once per epoch.
Deviations: the teaching world instead of a 16-shot image dataset, and float32 instead of fp16.
"""
from __future__ import annotations

import json
import logging
import math

import torch
import torch.nn.functional as F

from .. import world
from ..defenses.test_time import maple
from ..defenses.training_time import fap
from ..models import teaching
from ..models.loading import load_model
from .common import Clock, save_half
from .tapt_prompts import evaluate

log = logging.getLogger(__name__)
LAMBDA = 1.5


def epoch_lr(epoch: int, epochs: int, lr: float, warmup: int = 1, warmup_lr: float = 1e-5) -> float:
    """Dassl's constant warm-up followed by cosine annealing over `epochs`, per epoch."""
    if epoch < warmup:
        return warmup_lr
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / epochs))


def _forward(clf, text, prompts, images):
    feats, _ = maple.encode_image(clf, images, prompts)
    return clf.logit_scale * feats @ maple.text_features(text, prompts).t(), feats


def kl_per_image(adv_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) for each image (the official `calculate_elementwise_kl_div`)."""
    return F.kl_div(adv_logits.log_softmax(1), clean_logits.softmax(1), reduction="none").sum(-1)


def fap_loss(clean_logits, adv_logits, clean_feats, adv_feats, labels) -> torch.Tensor:
    weight = F.cosine_similarity(clean_feats, adv_feats) + 1
    return F.cross_entropy(clean_logits, labels) + LAMBDA * (kl_per_image(adv_logits, clean_logits) * weight).mean()


def attack(clf, text, prompts, images: torch.Tensor, eps: float, alpha: float, steps: int,
           generator: torch.Generator) -> torch.Tensor:
    """The training attack: PGD on KL(p_clean || p_adv) from a uniform start in the eps-ball."""
    with torch.no_grad():
        clean = _forward(clf, text, prompts, images)[0]
    delta = (torch.rand(images.shape, generator=generator) * 2 - 1) * eps
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    for _ in range(steps):
        loss = F.kl_div(_forward(clf, text, prompts, images + delta)[0].log_softmax(1), clean.softmax(1),
                        reduction="batchmean")
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
        delta = ((images + delta).clamp(0, 1) - images).detach().requires_grad_(True)
    return (images + delta).detach()


def train_fap(model: str, shots: int, epochs: int, batch_size: int, lr: float, eps: float, seed: int,
              minutes: float | None, out_dir) -> dict:
    torch.manual_seed(seed)
    base = load_model(model, "cpu")
    clf = base.classifier([world.CLASSNAMES[i] for i in world.SEEN_CLASSES], [world.EVAL_TEMPLATE])
    g = torch.Generator().manual_seed(seed)
    prompts = fap.fresh_prompts(clf, g)
    text = maple.learner(clf)
    images, labels = few_shot(shots, seed)
    opt = torch.optim.SGD(prompts.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    clock, history, step = Clock(minutes), [], 0
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = epoch_lr(epoch, epochs, lr)
        order = torch.randperm(len(images), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, y = images[idx], labels[idx]
            adv = attack(clf, text, prompts, x, eps, eps, 2, g)
            clean_logits, clean_feats = _forward(clf, text, prompts, x)
            adv_logits, adv_feats = _forward(clf, text, prompts, adv)
            loss = fap_loss(clean_logits, adv_logits, clean_feats, adv_feats, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                log.info("epoch %d step %d loss %.4f %.0fs", epoch, step, loss.item(), clock.elapsed)
        if clock.expired():
            log.info("time budget reached after %d epochs", epoch + 1)
            break
    prompts.requires_grad_(False)
    history.append({"epochs": epoch + 1, "steps": step, "loss": round(loss.item(), 4),
                    "seconds": round(clock.elapsed), **evaluate(model, prompts)})
    log.info("eval %s", history[-1])
    meta = {"history": history, "shots": shots, "epochs": epochs, "batch_size": batch_size, "lr": lr, "eps": eps,
            "seed": seed, "lambda": LAMBDA,
            "command": f"python -m demo.train fap --model {model} --shots {shots} --epochs {epochs} "
                       f"--batch-size {batch_size} --lr {lr} --eps {eps * 255:g} --seed {seed}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_half(prompts.state_dict(), out_dir / "fap_prompts.safetensors", {"training": meta})
    (out_dir / "fap_prompts.json").write_text(json.dumps(meta, indent=2) + "\n")
    return history[-1]


def few_shot(shots: int, seed: int, chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `shots` images of every seen class in a seeded stream, labelled by their index among
    the seen classes (rendered in chunks, so memory stays small)."""
    remap = {c: i for i, c in enumerate(world.SEEN_CLASSES)}
    taken: dict[int, list[torch.Tensor]] = {c: [] for c in world.SEEN_CLASSES}
    for k in range(100):
        images, labels, _ = world.make_batch(chunk, 30_000 + seed * 1_000 + k, teaching.IMAGE_SIZE, "seen")
        for image, label in zip(images, labels.tolist()):
            if len(taken[label]) < shots:
                taken[label].append(image)
        if all(len(v) == shots for v in taken.values()):
            break
    else:
        raise RuntimeError(f"could not draw {shots} images of every class")
    images = torch.stack([im for c in world.SEEN_CLASSES for im in taken[c]])
    return images, torch.tensor([remap[c] for c in world.SEEN_CLASSES for _ in range(shots)])
