"""Adversarial fine-tuning of the teaching model's image tower: TeCoA and FARE.

TeCoA (Mao et al., "Understanding Zero-Shot Adversarial Robustness for Large-Scale Models", ICLR 2023,
arXiv 2212.07016): inner PGD maximizes the cross-entropy of the image-text logits (class prompts of
the training classes); the outer step minimizes the same loss on the adversarial images, updating only
the image tower.

FARE (Schlarmann et al., "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision Embeddings for
Robust Large Vision-Language Models", ICML 2024, arXiv 2402.12336): no labels and no text; inner PGD
maximizes ||phi(x+delta) - phi_0(x)||^2 on unnormalized embeddings, the outer step minimizes it, so
adversarial embeddings stay where the original encoder put the clean image.

PMG-AFT (Wang, Zhang, Yuan & Shan, "Pre-trained Model Guided Fine-Tuning for Zero-Shot Adversarial
Robustness", CVPR 2024, arXiv 2401.04350): TeCoA's inner attack and cross-entropy, plus two KL terms
towards the adversarial prediction: from the frozen pre-trained tower's prediction on the same
adversarial image (the guidance) and from the fine-tuned tower's own clean prediction (consistency).

`finetune` is the same loop without the attack (the "FT-Clean" baseline of the AFT papers): it is the
second stage of the teaching model's own training, aligning the image tower with the frozen text
tower's class prompts of the seen combinations (held-out combinations stay unseen). With `shape_hues`
it adds a cross-entropy over the 8 shape prompts ("a photo of a heart.") on shapes drawn in
off-palette hues (`world.off_palette_hues`): a ViT tower fine-tuned on the palette alone ties each shape
to the colours it was seen in and names held-out combinations by a seen shape of the right colour.
Two more terms serve the same end: `palette_shapes`, the shape-prompt cross-entropy on the palette images
too, and `hue_saturation`, a lower saturation floor for the off-palette shapes (down to grey, which has no
hue to tie a shape to; the shape held out in pale pink keeps the floor). `embed_kd` is feature
distillation (the cosine distance of the image embeddings) towards the ResNet teaching model's image
tower, whose embeddings live in the same space since the ViT borrows its text tower; it sees the palette
and off-palette images only, like every other term.

All follow RobustVLM's recipe shape (AdamW, weight decay 1e-4, warm-up then cosine, eps 4/255, only
`model.visual` trained, text tower frozen). Deviations for a 2-core CPU budget, stated in the UI too:
90 steps instead of 20k, inner PGD with 3 steps of 2/255 and no momentum (RobustVLM: 10 steps of
1/255 with momentum 0.9 on the sign; see STEPS_NOTE), and a higher learning rate since the tower is
small and trained from scratch. BatchNorm statistics
stay frozen (eval mode) during fine-tuning, as is usual when fine-tuning a pretrained network.
"""
from __future__ import annotations

import copy
import json
import logging

import torch
import torch.nn.functional as F

from .. import world
from ..attacks.embedding_pgd import embedding_pgd
from ..models import teaching
from ..models.classifier import ZeroShotClassifier, build_text_features
from ..models.loading import load_model
from ..registry import ATTACKS
from .common import Clock, cosine_lr, progress_record, save_half, world_loader

log = logging.getLogger(__name__)

STEPS_NOTE = ("inner PGD: {steps} steps of {alpha:.1f}/255 at eps {eps:.0f}/255, no momentum "
              "(RobustVLM: 10 steps of 1/255, momentum 0.9)")
METHODS = ("tecoa", "fare", "pmg_aft", "finetune")


def pmg_aft_loss(adv_logits: torch.Tensor, labels: torch.Tensor, clean_logits: torch.Tensor,
                 original_adv_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """PMG-AFT's objective: CE(adv) + KL(p_original(adv) || p(adv)) + KL(p(clean) || p(adv)).

    As in the official code: the logits are plain cosine similarities (its CLIP wrapper divides the
    logit scale out again), the cross-entropy is averaged over the batch, both KL terms have weight 1
    and are summed over the batch (`KLDivLoss(reduction="sum")`), and the clean prediction is not
    detached. The caller passes cosine logits.
    """
    log_adv = F.log_softmax(adv_logits, dim=-1)
    ce = F.cross_entropy(adv_logits, labels)
    guide = F.kl_div(log_adv, F.softmax(original_adv_logits.detach(), dim=-1), reduction="sum")
    consistency = F.kl_div(log_adv, F.softmax(clean_logits, dim=-1), reduction="sum")
    return ce + guide + consistency, {"ce": float(ce.detach()), "kl_original": float(guide.detach()),
                                      "kl_clean": float(consistency.detach())}


def _classifier(base, visual, feats, classnames, logit_scale: float | None = None) -> ZeroShotClassifier:
    scale = float(base.clip.logit_scale.exp()) if logit_scale is None else logit_scale
    clf = ZeroShotClassifier(base.clip, base.mean, base.std, feats, classnames, scale)
    return clf.with_visual(visual)


def train_robust(method: str, steps: int, batch_size: int, lr: float, eps: float, inner_steps: int,
                 inner_alpha: float, seed: int, minutes: float | None, out_path, eval_every: int,
                 logit_scale: float | None = None, model: str = "teaching", shape_hues: float = 0.0,
                 hue_batch: int = 32, device: str = "cpu", init=None, palette_shapes: float = 0.0,
                 hue_saturation: float | None = None, embed_kd: float = 0.0) -> dict:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if (shape_hues or palette_shapes or embed_kd) and method != "finetune":
        raise ValueError("shape_hues, palette_shapes and embed_kd are terms of clean fine-tuning (method 'finetune')")
    if embed_kd and teaching.MODELS[model].text_weights is None:
        raise ValueError(f"embed_kd distils towards the ResNet teaching model's image tower; {model} has no lender")
    torch.manual_seed(seed)
    base = load_model(model, device)
    device = base.device
    frozen = base.clip.visual  # phi_0: shared, frozen, never updated
    visual = copy.deepcopy(frozen).requires_grad_(True)
    if init is not None:  # continue from an earlier run's image tower; phi_0 stays the shipped one
        from safetensors.torch import load_file

        visual.load_state_dict({k: v.float() for k, v in load_file(str(init)).items()})
    visual.eval()  # frozen BatchNorm statistics; affine parameters still train
    seen_names = [world.CLASSNAMES[i] for i in world.SEEN_CLASSES]
    seen_feats = build_text_features(base.clip, base.tokenizer, seen_names, [world.EVAL_TEMPLATE])
    remap = torch.full((len(world.CLASSNAMES),), -1, dtype=torch.long)
    remap[torch.tensor(world.SEEN_CLASSES)] = torch.arange(len(world.SEEN_CLASSES))
    remap = remap.to(device)
    clf = _classifier(base, visual, seen_feats, seen_names, logit_scale)
    if shape_hues or palette_shapes:
        shape_feats = build_text_features(base.clip, base.tokenizer, world.SHAPES, ["a photo of a {}."])
        hue_gen = torch.Generator().manual_seed(seed + 7)
    original = _classifier(base, frozen, seen_feats, seen_names, logit_scale)
    if embed_kd:  # the lending model's image tower, whose embeddings live in the same (shared-text) space
        teacher = load_model("teaching", device).clip.visual.eval().requires_grad_(False)
    opt = torch.optim.AdamW(visual.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 10)
    gen = torch.Generator(device=device).manual_seed(seed)
    attack = ATTACKS.create("pgd", eps=eps, alpha=inner_alpha, steps=inner_steps) if method in ("tecoa", "pmg_aft") else None
    loader = iter(world_loader(batch_size, seed + 100))
    clock, history = Clock(minutes), []
    for step in range(steps):
        images, labels, _, _ = next(loader)  # rendered on the CPU by the loader's worker
        images, labels = images.to(device), labels.to(device)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, warmup, lr)
        if method in ("tecoa", "finetune"):
            y = remap[labels]
            adv = images if method == "finetune" else attack(clf, images, y, seed=seed * 100_003 + step).adv_images
            feats = clf.encode(adv)  # each image through the tower once per step, shared by every term
            loss = F.cross_entropy(clf.logits_from_features(feats), y)
            if shape_hues:
                scenes = world.sample_scenes(hue_batch, hue_gen, "all")
                floor = None if hue_saturation is None else world.off_palette_saturation_floor(scenes.shape, hue_saturation)
                shapes = world.render(scenes, teaching.IMAGE_SIZE, hue_gen, world.off_palette_hues(scenes.shape, hue_gen),
                                      floor).to(device)
                shape_embeds = clf.encode(shapes)
                loss = loss + shape_hues * F.cross_entropy(clf.logits_from_features(shape_embeds, shape_feats),
                                                           scenes.shape.to(device))
            if embed_kd:
                x, mine = (torch.cat([adv, shapes]), torch.cat([feats, shape_embeds])) if shape_hues else (adv, feats)
                with torch.no_grad():
                    target = clf.encode(x, visual=teacher)
                loss = loss + embed_kd * (1 - (mine * target).sum(-1)).mean()
            if palette_shapes:  # the same shape prompts on the palette images: shape read apart from colour
                loss = loss + palette_shapes * F.cross_entropy(
                    clf.logits_from_features(feats, shape_feats), labels % len(world.SHAPES))
        elif method == "pmg_aft":
            y = remap[labels]
            adv = attack(clf, images, y, seed=seed * 100_003 + step).adv_images
            with torch.no_grad():
                original_logits = original(adv)
            cos = 1.0 / clf.logit_scale  # the official loss works on plain cosine similarities
            loss, _ = pmg_aft_loss(clf(adv) * cos, y, clf(images) * cos, original_logits * cos)
        else:
            with torch.no_grad():
                ref = clf.encode(images, visual=frozen, normalize=False)
            adv = embedding_pgd(lambda x: clf.encode(x, normalize=False), images, ref, eps, inner_alpha, inner_steps, gen)
            loss = (clf.encode(adv, normalize=False) - ref).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            log.info("%s step %d/%d loss %.4f %.0fs", method, step, steps, loss.item(), clock.elapsed)
        done = step + 1 == steps or clock.expired()
        if (step + 1) % eval_every == 0 or done:
            history.append(_evaluate(base, visual, step + 1, loss.item(), clock.elapsed, eps, logit_scale))
            log.info("eval %s", history[-1])
            meta = {"method": method, "history": history, "steps": step + 1, "batch_size": batch_size, "lr": lr,
                    "eps": eps, "inner": STEPS_NOTE.format(steps=inner_steps, alpha=inner_alpha * 255, eps=eps * 255),
                    "seed": seed, "logit_scale": round(clf.logit_scale, 2)}
            if shape_hues:
                meta |= {"shape_hues": shape_hues, "hue_batch": hue_batch}
                if hue_saturation is not None:
                    meta["hue_saturation"] = hue_saturation
            if palette_shapes:
                meta["palette_shapes"] = palette_shapes
            if embed_kd:
                meta["embed_kd"] = embed_kd
            if init is not None:
                meta["init"] = str(init)
            save_half(visual.state_dict(), out_path, {"training": meta})
            out_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        if done:
            break
    return history[-1]


def _evaluate(base, visual, step: int, loss: float, seconds: float, eps: float, logit_scale: float | None = None,
              n: int = 200) -> dict:
    feats = build_text_features(base.clip, base.tokenizer, world.CLASSNAMES, [world.EVAL_TEMPLATE])
    return progress_record(_classifier(base, visual, feats, world.CLASSNAMES, logit_scale), step, loss, seconds,
                           eps, n)


def finetune_teaching(steps: int, batch_size: int, lr: float, seed: int, minutes: float | None, out_dir,
                      eval_every: int, logit_scale: float | None = None, model: str = "teaching",
                      shape_hues: float = 0.0, hue_batch: int = 32, device: str = "cpu", init=None,
                      palette_shapes: float = 0.0, hue_saturation: float | None = None, embed_kd: float = 0.0) -> dict:
    """Clean fine-tuning of the teaching model's image tower, written back into its checkpoint.

    `logit_scale`, when given, is used for the loss and written into the checkpoint. Pretrained CLIPs
    end with a scale of 100 (the clamp), so their class prompts sit only a few hundredths of cosine
    similarity apart, which is a large part of why a tiny perturbation flips them. The short
    contrastive pretraining here stops near 20; fine-tuning at CLIP's final scale gives the teaching
    model the same narrow, confident margins instead of the wide ones a low scale asks for.
    """
    import math

    from safetensors.torch import load_file

    which = teaching.MODELS[model]
    if which.tower is not None and logit_scale is not None:
        raise ValueError(f"{model} borrows its logit scale with its text tower; fine-tune it without --logit-scale")
    tmp = out_dir / "visual_finetune.tmp.safetensors"
    result = train_robust("finetune", steps, batch_size, lr, 4 / 255, 0, 0.0, seed, minutes, tmp, eval_every,
                          logit_scale, model, shape_hues, hue_batch, device, init, palette_shapes, hue_saturation,
                          embed_kd)
    meta = json.loads(tmp.with_suffix(".json").read_text())
    if which.tower is not None:  # the tower file is the whole of this model's own weights
        save_half(load_file(str(tmp)), out_dir / which.tower.name, {"training": {"stage": "finetune", **meta}})
        return _finish_finetune(out_dir, tmp, meta, result)
    ckpt = out_dir / "open_clip_model.safetensors"
    state = load_file(str(ckpt))
    state.update({f"visual.{k}": v for k, v in load_file(str(tmp)).items()})
    if logit_scale is not None:
        state["logit_scale"] = torch.tensor(math.log(logit_scale), dtype=state["logit_scale"].dtype)
    save_half(state, ckpt, {"training": {"stage": "finetune", **meta}})
    return _finish_finetune(out_dir, tmp, meta, result)


def _finish_finetune(out_dir, tmp, meta: dict, result: dict) -> dict:
    (out_dir / "training_finetune.json").write_text(json.dumps(meta, indent=2))
    tmp.unlink()
    tmp.with_suffix(".json").unlink()
    return result
