"""Linear probes: at which stage of each teaching model's image tower can a held-out pair's shape be read?

A probe is a multinomial logistic regression on one stage's features (each channel's mean and standard
deviation over positions, as the world check reads them, or the final image embedding), trained on images
of seen (colour, shape) pairs to name the shape (or the colour), then tested on images of the held-out
pairs. The seen pairs never show a held-out pair's colour and shape together, so a probe that reads a
held-out pair's shape reads it apart from its colour. Where the ResNet's deep features carry shape that
way and the ViT's do not, the ViT names held-out pairs by a seen shape of the right colour.

    python -m demo.eval.probe --out docs/results/shape_probe
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from ..models import teaching, world_check
from ..models.loading import load_model
from .metrics import fmt_ci
from .publish import markdown as md

MODELS = ("teaching", "teaching-vit")
TITLES = {"teaching": "ResNet", "teaching-vit": "ViT"}
TARGETS = {"shape": len(world.SHAPES), "colour": len(world.COLOR_NAMES)}
TRAIN_SEED, SEEN_SEED, HELD_OUT_SEED, GAP_SEED = 8_100, 8_500, 8_900, 9_300  # apart from the evaluation seeds


@torch.no_grad()
def stage_features(loaded, x: torch.Tensor) -> list[torch.Tensor]:
    """Per stage (the world check's four stages, then the image embedding): (N, features) on the CPU."""
    clf = loaded.classifier(world.CLASSNAMES[:2])
    return world_check.stage_stats(loaded, x) + [clf.encode(x.to(loaded.device)).float().cpu()]


def pair_answers(loaded, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, dict]:
    """Zero-shot answers on the held-out test images, per pair: how often the tower names it, and what
    it names it when it does not (the class prompts of all 64 pairs, as the evaluation reads them)."""
    clf = loaded.classifier(world.CLASSNAMES)
    with torch.no_grad():
        answers = clf.logits_from_features(embeddings.to(clf.device)).argmax(1).cpu()
    out = {}
    for c in labels.unique().tolist():
        mine = answers[labels == c]
        wrong = [world.CLASSNAMES[a] for a in mine.tolist() if a != c]
        confusions = {name: wrong.count(name) for name in sorted(set(wrong), key=lambda k: (-wrong.count(k), k))}
        out[world.CLASSNAMES[c]] = {"n": len(mine), "accuracy": float((mine == c).float().mean()),
                                    "confusions": confusions}
    return out


def hue_gap(loaded, n: int) -> dict[str, dict]:
    """Per shape, how often the shape prompts name it when drawn in off-palette colours: at the hue of the
    colour it is held out in (inside the gap that `--shape-hues` fine-tuning never draws it in) and at the
    hues it may be drawn in. A tower that reads shape apart from hue names it in the gap too; one that
    learned each shape hue by hue does not."""
    from ..world.render import COLORS, HUE_JITTER

    clf = loaded.classifier(world.SHAPES, ["a photo of a {}."])
    out = {}
    for i, shape in enumerate(world.SHAPES):
        colour = next(c for c, s in world.HELD_OUT if s == shape)
        g = torch.Generator().manual_seed(GAP_SEED + i)
        scenes = world.sample_scenes(2 * n, g, "all")
        scenes.shape[:] = i
        hues = torch.cat([COLORS[colour][0] + (torch.rand(n, generator=g) * 2 - 1) * HUE_JITTER,
                          world.off_palette_hues(scenes.shape[n:], g)])
        images = world.render(scenes, teaching.IMAGE_SIZE, g, hues % 360)
        with torch.no_grad():
            right = (clf(images.to(loaded.device)).argmax(1).cpu() == i).float()
        out[shape] = {"held_out_in": colour, "n": n, "in_gap": float(right[:n].mean()),
                      "elsewhere": float(right[n:].mean())}
    return out


def _features(loaded, n: int, seed: int, split: str, batch: int = 250) -> tuple[list[torch.Tensor], torch.Tensor]:
    parts, labels = [], []
    for start in range(0, n, batch):
        images, y, _ = world.make_batch(min(batch, n - start), seed + start, teaching.IMAGE_SIZE, split)
        parts.append(stage_features(loaded, images))
        labels.append(y)
    return [torch.cat(stage) for stage in zip(*parts)], torch.cat(labels)


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float = 1e-3):
    """A standardised multinomial logistic regression (L-BFGS); returns predict(features) -> labels."""
    mean, std = x.mean(0), x.std(0) + 1e-5
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda f: (((f - mean) / std) @ w + b).argmax(1)


def _target(labels: torch.Tensor, what: str) -> torch.Tensor:
    return labels % len(world.SHAPES) if what == "shape" else labels // len(world.SHAPES)


def probe_model(model: str, n_train: int, n_test: int) -> dict:
    torch.manual_seed(0)
    loaded = load_model(model, "cpu")
    train, y_train = _features(loaded, n_train, TRAIN_SEED, "seen")
    seen, y_seen = _features(loaded, n_test, SEEN_SEED, "seen")
    held, y_held = _features(loaded, n_test, HELD_OUT_SEED, "held_out")
    stages = []
    for k in range(len(train)):
        row = {"stage": k, "features": int(train[k].shape[1])}
        for what, classes in TARGETS.items():
            predict = fit_probe(train[k], _target(y_train, what), classes)
            for split, feats, y in (("seen", seen[k], y_seen), ("held_out", held[k], y_held)):
                row[f"{what}_{split}"] = float((predict(feats) == _target(y, what)).float().mean())
        stages.append(row)
    return {"stages": stages, "stage_names": stage_names(loaded), "held_out_pairs": pair_answers(loaded, held[-1], y_held),
            "hue_gap": hue_gap(loaded, n_test // 5)}


def stage_names(loaded) -> list[str]:
    visual = loaded.clip.visual
    if hasattr(visual, "transformer"):
        blocks = len(visual.transformer.resblocks)
        keep = sorted({round(i * (blocks - 1) / 3) for i in range(4)})
        names = [f"block {i + 1} of {blocks}" for i in keep]
    else:
        names = [f"layer{i}" for i in range(1, 5)]
    return names + ["image embedding"]


def table(result: dict) -> str:
    """Markdown: a row per stage and model, probe accuracy on seen and held-out pairs with 95% intervals."""
    n = result["n_test"]
    keys = ("shape_seen", "shape_held_out", "colour_held_out")
    rows = [[TITLES.get(model, model), name] + [fmt_ci(s[k], n) for k in keys]
            for model, r in result["models"].items() for name, s in zip(r["stage_names"], r["stages"])]
    return md.text(["model", "stage", "shape (seen pairs)", "shape (held-out pairs)", "colour (held-out pairs)"], rows,
                   align="llrrr")


def _by_model(result: dict, section: str, first: tuple[str, str], suffixes: tuple[str, str], align: str, label,
              cells) -> str:
    """Markdown: a row per entry of each tower's `section`, its image count, then two columns per tower."""
    models = result["models"]
    head = [f"{TITLES.get(m, m)}{suffix}" for m in models for suffix in suffixes]
    rows = [[label(key, row), row["n"]] + [c for r in models.values() for c in cells(r[section][key])]
            for key, row in next(iter(models.values()))[section].items()]
    return md.text([*first, *head], rows, align="lr" + align * len(models))


def pair_table(result: dict) -> str:
    """Markdown: each held-out pair's zero-shot accuracy per tower, and each tower's commonest wrong answer."""
    def cells(p: dict) -> list[str]:
        top = next(iter(p["confusions"].items()), None)
        return [fmt_ci(p["accuracy"], p["n"]), f"{top[0]} ({top[1]} of {p['n']})" if top else "-"]

    return _by_model(result, "held_out_pairs", ("held-out pair", "images"), ("", "'s commonest wrong answer"),
                     "rl", lambda pair, row: pair, cells)


def gap_table(result: dict) -> str:
    """Markdown: each shape's shape-prompt accuracy inside its hue gap and elsewhere, per tower."""
    return _by_model(result, "hue_gap", ("shape (held out in)", "images each"), (", in the gap", ", elsewhere"),
                     "rr", lambda shape, row: f"{shape} ({row['held_out_in']})",
                     lambda g: [fmt_ci(g[k], g["n"]) for k in ("in_gap", "elsewhere")])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.eval.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=3000, help="seen-pair images the probes learn from")
    p.add_argument("--n-test", type=int, default=1000, help="test images per split")
    p.add_argument("--out", type=Path, default=Path("docs/results/shape_probe"), help="output path without suffix")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m demo.eval.probe" + (f" --n-train {args.n_train}" if args.n_train != 3000 else "") \
        + (f" --n-test {args.n_test}" if args.n_test != 1000 else "") + f" --out {args.out}"
    result = {"command": command, "n_train": args.n_train, "n_test": args.n_test,
              "models": {m: probe_model(m, args.n_train, args.n_test) for m in MODELS}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    tables = table(result) + "\n" + pair_table(result) + "\n" + gap_table(result)
    args.out.with_suffix(".md").write_text(f"`{command}`\n\n" + tables)
    print(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
