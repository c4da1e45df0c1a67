"""Train the teaching CLIP from scratch on the teaching world (contrastive image-caption loss).

The recipe is CLIP's (Radford et al., 2021, arXiv 2103.00020): symmetric InfoNCE between image and
caption embeddings with a learned temperature, AdamW, warm-up then cosine decay. Captions come in
several templates, some naming only the color or only the shape, so the text tower learns the words
separately and can compose held-out (color, shape) pairs.

For a teaching model that borrows its text tower (`teaching-vit`), the text tower and the logit scale
are loaded from that checkpoint and frozen, and only the image tower learns: CLIP's loss with a locked
text side, the mirror image of LiT's locked image side (Zhai et al., CVPR 2022, arXiv 2111.07991). Both
models then embed a label in the same place, so a comparison between them isolates the image tower.
A from-scratch ViT learns this world slowly from captions alone (11% zero-shot after 300 steps, where the
ResNet was at 30%), so `distill` and `hints` add distillation from the lending model's image tower
(`distill.py`: its zero-shot answers, and its layer-3 feature map as hints for the ViT's patch tokens).
The ViT learns to see as the ResNet does with its own architecture, and its own adversarial weaknesses.
"""
from __future__ import annotations

import json
import logging

import open_clip
import torch
from safetensors.torch import load_file

from ..models import teaching
from .distill import Distiller
from .common import Clock, contrastive_loss, cosine_lr, save_half, world_classifier, world_loader, zero_shot_accuracy

log = logging.getLogger(__name__)


def build_fresh(seed: int, which: teaching.TeachingModel = teaching.MODELS["teaching"]) -> tuple[open_clip.CLIP, object]:
    """A freshly initialised teaching CLIP; one that borrows its text tower gets it (frozen) here."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**which.model_cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=which.model_cfg["text_cfg"]["context_length"])
    if which.text_weights is not None:
        text = {k: v.float() for k, v in load_file(str(which.text_weights)).items() if not k.startswith("visual.")}
        missing, unexpected = model.load_state_dict(text, strict=False)
        assert not unexpected and all(k.startswith("visual.") for k in missing), (missing, unexpected)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("visual."))
    return model, tokenizer


def load_trained(which: teaching.TeachingModel, folder) -> dict[str, torch.Tensor]:
    """The weights a training run saved in `folder`, as a full state dict."""
    if which.tower is None:
        return {k: v.float() for k, v in load_file(str(folder / "open_clip_model.safetensors")).items()}
    return {f"visual.{k}": v.float() for k, v in load_file(str(folder / which.tower.name)).items()}


def train_clip(steps: int, batch_size: int, lr: float, seed: int, minutes: float | None, out_dir, eval_every: int,
               init=None, which: teaching.TeachingModel = teaching.MODELS["teaching"], distill: float = 0.0,
               hints: float = 0.0, factors: float = 0.0, device: str = "cpu") -> dict:
    device = torch.device(device)
    model, tokenizer = build_fresh(seed, which)
    distiller = Distiller(which, model, tokenizer, distill, hints, factors) if distill or hints or factors else None
    if init is not None:  # continue from an earlier run's weights (a new schedule, new data seeds)
        model.load_state_dict(load_trained(which, init), strict=which.tower is None)
    model.to(device)
    if distiller is not None:
        distiller.to(device)
    model.train()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if distiller is not None and distiller.regressor is not None:  # used in training only, never saved
        trained += [(f"regressor.{n}", p) for n, p in distiller.regressor.named_parameters()]
    decay = [p for n, p in trained if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in trained if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    clock, history = Clock(minutes), []
    warmup = max(1, steps // 20)
    loader = iter(world_loader(batch_size, seed))
    for step in range(steps):
        images, _, caps, match = next(loader)  # rendered on the CPU by the loader's worker
        images, match, tokens = images.to(device), match.to(device), tokenizer(caps).to(device)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, warmup, lr)
        x = _normalize(images)  # the inputs inference sees
        if distiller is None:
            img, txt, scale = model(x, tokens)
            loss = contrastive_loss(img, txt, scale, match)
        else:
            img, hint = distiller.encode(model.visual, x)
            txt, scale = model.encode_text(tokens), model.logit_scale.exp()
            loss = contrastive_loss(img, txt, scale, match) + distiller.loss(x, img, hint, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # exp <= 100, as in CLIP
        if step % 20 == 0:
            log.info("step %d/%d loss %.4f scale %.1f %.0fs", step, steps, loss.item(), scale.item(), clock.elapsed)
        if (step + 1) % eval_every == 0 or step + 1 == steps or clock.expired():
            model.eval()
            clf = world_classifier(model, tokenizer)
            acc = {"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(clock.elapsed),
                   "seen": zero_shot_accuracy(clf, 500, seed=1, split="seen"),
                   "held_out": zero_shot_accuracy(clf, 500, seed=2, split="held_out")}
            history.append(acc)
            log.info("eval %s", acc)
            model.train()
            _save(model, out_dir, which, {"history": history, "steps": step + 1, "batch_size": batch_size, "lr": lr,
                                          "seed": seed, "distill": distill, "hints": hints, "factors": factors,
                                          "init": str(init) if init else None})
        if clock.expired():
            log.info("time budget reached after %d steps", step + 1)
            break
    return history[-1]


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(teaching.MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(teaching.STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _save(model, out_dir, which: teaching.TeachingModel, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if which.tower is None:
        save_half(model.state_dict(), out_dir / "open_clip_model.safetensors", {"training": meta})
    else:  # the borrowed text tower is stored once, in its own checkpoint
        save_half(model.visual.state_dict(), out_dir / which.tower.name, {"training": meta})
    (out_dir / "open_clip_config.json").write_text(json.dumps(teaching.config(which), indent=2))
    (out_dir / "training_clip.json").write_text(json.dumps(meta, indent=2))
