"""python -m demo.train WHAT [options]: train the teaching model and its defenses.

WHAT is clip or finetune (the teaching model itself), a robust image tower (one command per defense that
needs one, named after it), apt, fap, tapt-prompts or ttc-threshold."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ..defenses import DEFENSES
from ..defenses.base import Weights
from ..models import teaching

# The defenses that classify with a robust image tower: each gets a command that fine-tunes one.
TOWERS = DEFENSES.names(lambda c: c.trained_weights is Weights.IMAGE_TOWER)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.train", description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("clip", help="train the teaching CLIP from scratch on the teaching world")
    c.add_argument("--steps", type=int, default=900)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=2e-3)
    c.add_argument("--eval-every", type=int, default=150)
    c.add_argument("--out", type=Path, default=None, help="output folder (default: the model's assets folder)")
    c.add_argument("--init", type=Path, default=None, help="start from the weights in this folder")
    c.add_argument("--distill", type=float, default=0.0,
                   help="weight of the KL divergence to the lending model's zero-shot answers (models that borrow a text tower)")
    c.add_argument("--hints", type=float, default=0.0,
                   help="weight of the lending model's layer-3 feature map as hints for the patch tokens (FitNets)")
    c.add_argument("--factors", type=float, default=0.0,
                   help="weight of the KL divergence to the lending model's answers over colour prompts and over shape prompts")
    ft = sub.add_parser("finetune", help="stage 2 of the teaching model: fine-tune its image tower on clean images "
                        "against the frozen text tower's class prompts (seen combinations only)")
    ft.add_argument("--steps", type=int, default=150)
    ft.add_argument("--batch-size", type=int, default=64)
    ft.add_argument("--lr", type=float, default=3e-4)
    ft.add_argument("--eval-every", type=int, default=75)
    ft.add_argument("--out", type=Path, default=None, help="teaching model folder to update (default: the model's)")
    ft.add_argument("--logit-scale", type=float, default=None,
                    help="fine-tune at this logit scale and store it in the checkpoint (CLIP ends at 100)")
    ft.add_argument("--shape-hues", type=float, default=0.0,
                    help="weight of a shape-prompt cross-entropy on shapes in off-palette hues (unties shape from colour)")
    ft.add_argument("--hue-batch", type=int, default=32, help="off-palette shape images per step")
    ft.add_argument("--hue-saturation", type=float, default=None,
                    help="lowest saturation of the off-palette shapes (default 0.5; a shape held out in pale pink keeps 0.5)")
    ft.add_argument("--palette-shapes", type=float, default=0.0,
                    help="weight of the same shape-prompt cross-entropy on the palette images")
    ft.add_argument("--embed-kd", type=float, default=0.0,
                    help="weight of a cosine distance to the ResNet teaching model's image embeddings (teaching-vit)")
    ft.add_argument("--init", type=Path, default=None,
                    help="start from this image tower (.safetensors of an earlier run) instead of the model's own")
    for method in TOWERS:
        r = sub.add_parser(method, help="adversarially fine-tune the teaching model's image tower "
                           f"({DEFENSES.get(method).method()})")
        r.add_argument("--steps", type=int, default=200)
        r.add_argument("--batch-size", type=int, default=64)
        r.add_argument("--lr", type=float, default=3e-4)
        r.add_argument("--eps", type=float, default=4.0, help="L-inf budget in /255")
        r.add_argument("--inner-steps", type=int, default=3)
        r.add_argument("--inner-alpha", type=float, default=2.0, help="inner PGD step in /255")
        r.add_argument("--eval-every", type=int, default=50)
        r.add_argument("--out", type=Path, default=None, help="output .safetensors (default: the model's assets)")
    a = sub.add_parser("apt", help="adversarial prompt tuning of a 4-token text context on the TeCoA tower")
    a.add_argument("--steps", type=int, default=150)
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--lr", type=float, default=2e-3)
    a.add_argument("--eps", type=float, default=4.0, help="L-inf budget in /255")
    a.add_argument("--eval-every", type=int, default=50)
    a.add_argument("--out", type=Path, default=None, help="output .safetensors (default: the model's assets)")
    fp = sub.add_parser("fap", help="few-shot adversarial multi-modal prompts (FAP; ViT towers only)")
    fp.add_argument("--shots", type=int, default=16, help="images per seen class")
    fp.add_argument("--epochs", type=int, default=10)
    fp.add_argument("--batch-size", type=int, default=4)
    fp.add_argument("--lr", type=float, default=0.0035)
    fp.add_argument("--eps", type=float, default=1.0, help="L-inf budget of the training attack in /255")
    fp.add_argument("--out", type=Path, default=None, help="output folder (default: the model's assets)")
    tp = sub.add_parser("tapt-prompts", help="TAPT's starting point: adversarially pre-trained multi-modal prompts "
                        "and the feature statistics it aligns to (ViT towers only)")
    tp.add_argument("--steps", type=int, default=150)
    tp.add_argument("--batch-size", type=int, default=32)
    tp.add_argument("--lr", type=float, default=2e-3)
    tp.add_argument("--eps", type=float, default=1.0, help="L-inf budget of the training attack in /255")
    tp.add_argument("--stats-images", type=int, default=2000)
    t = sub.add_parser("ttc-threshold", help="calibrate TTC's tau threshold for the teaching model")
    t.add_argument("--n", type=int, default=500, help="calibration images")
    t.add_argument("--max-drop", type=float, default=2.0, help="clean accuracy TTC may cost, in points")
    t.add_argument("--out", type=Path, default=None, help="output .json (default: the model's assets)")
    for name, s in sub.choices.items():
        s.add_argument("--model", choices=sorted(teaching.MODELS), default="teaching",
                       help="which teaching model (teaching-vit borrows the ResNet model's text tower)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--minutes", type=float, default=None, help="stop (and save) after this much wall time")
        s.add_argument("--threads", type=int, default=None)
        if name in ("clip", "finetune", *TOWERS):
            s.add_argument("--device", default="cpu", help="cpu or cuda (the world is rendered on the CPU either way)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    which = teaching.MODELS[args.model]
    if args.what == "clip":
        from .clip_pretrain import train_clip

        result = train_clip(args.steps, args.batch_size, args.lr, args.seed, args.minutes, args.out or which.folder,
                            args.eval_every, args.init, which, args.distill, args.hints, args.factors, args.device)
    elif args.what in TOWERS:
        from .robust import train_robust

        result = train_robust(args.what, args.steps, args.batch_size, args.lr, args.eps / 255, args.inner_steps,
                              args.inner_alpha / 255, args.seed, args.minutes, args.out or which.visual_weights(args.what),
                              args.eval_every, model=args.model, device=args.device)
    elif args.what == "finetune":
        from .robust import finetune_teaching

        result = finetune_teaching(args.steps, args.batch_size, args.lr, args.seed, args.minutes,
                                   args.out or which.folder, args.eval_every, args.logit_scale, args.model,
                                   args.shape_hues, args.hue_batch, args.device, init=args.init,
                                   palette_shapes=args.palette_shapes, hue_saturation=args.hue_saturation, embed_kd=args.embed_kd)
    elif args.what == "apt":
        from .apt_prompt import train_apt

        result = train_apt(args.steps, args.batch_size, args.lr, args.eps / 255, args.seed, args.minutes,
                           args.out or which.apt_prompt, args.eval_every, args.model)
    elif args.what == "fap":
        from .fap_prompts import train_fap

        result = train_fap(args.model, args.shots, args.epochs, args.batch_size, args.lr, args.eps / 255, args.seed,
                           args.minutes, args.out or which.folder)
    elif args.what == "tapt-prompts":
        from .tapt_prompts import train_tapt_prompts

        result = train_tapt_prompts(args.steps, args.batch_size, args.lr, args.eps / 255, args.seed, args.minutes,
                                    which.folder, args.model, args.stats_images)
    elif args.what == "ttc-threshold":
        from .ttc_threshold import calibrate_ttc

        result = calibrate_ttc(args.n, args.max_drop / 100, args.seed, args.out or which.ttc_calibration,
                               model_key=args.model)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
