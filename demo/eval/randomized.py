"""The protocol for randomized and test-time defenses: how the field attacks them.

Follows AutoAttack's version for randomized defenses (Croce & Hein, ICML 2020, `version='rand'`: EOT over
20 draws per gradient step, the best point kept) and the rules of Athalye, Carlini & Wagner (ICML 2018) and
Croce et al. ("Evaluating the adversarial robustness of adaptive test-time defenses", ICML 2022):

- EOT: every gradient step averages the loss gradient over k fresh draws of the defense's randomness
  (its crops, resizes, random starts); k is swept (1, 2, 4, 8, 16, ...) and the curve published.
- Best point: each image keeps the iterate with the highest expected loss (the mean loss over the step's
  k draws), scored at every iterate including the last. The random start is the first candidate, so the
  clean image is never returned (torchattacks' APGD returns it for every image it did not fool).
- Scoring: every final image is classified on `score_draws` fresh draws of the defense (seeds no attack
  step used). Reported: the mean accuracy over draws and the share right on every draw; tables rank by
  the lower.
- Transfer: the same attack crafted on the undefended model, scored the same way.

Per image the result stores how many of the scoring draws were right, so shards merge by concatenation.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks.base import quantize_in_budget, step_for_budget
from ..defenses import DEFENSES
from ..models.loading import exact_float32, load_model
from .randomized_apgd import eot_apgd
from .run import EvalError, load_data

log = logging.getLogger("demo.eval.randomized")  # not __name__: run with -m it is "__main__"

# Scoring seeds lie far above every seed an attack step uses (a batch seed plus at most a few thousand
# calls), so the draws an image is scored on are fresh.
SCORE_SEED = 10_000_000


def single_draw_module(defense, clf: nn.Module, seed: int) -> nn.Module:
    """The defense's differentiable path with one fresh draw per call: EOT is done here, on the loss."""
    if "eot_draws" in {f.name for f in defense.params()}:
        defense = replace(defense, eot_draws=1)
    return defense.as_module(clf, seed)


def _loss(module: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, grad: bool):
    """Mean cross-entropy per image over `draws` calls (fresh randomness each), and its input gradient."""
    x = x.detach().requires_grad_(grad)
    total = torch.zeros(x.shape[0], device=x.device)
    g = torch.zeros_like(x)
    for _ in range(draws):
        with torch.set_grad_enabled(grad):
            loss = F.cross_entropy(module(x), y, reduction="none")
            if grad:
                g += torch.autograd.grad(loss.sum(), x)[0]
        total += loss.detach()
    return total / draws, g / draws


def eot_pgd(module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
            draws: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """L-inf PGD (Madry et al., ICLR 2018) on the expected loss over `draws` draws per step, keeping each
    image's highest-expected-loss iterate. Returns (best images, their expected loss, the mean expected
    loss of the iterates per step, the curve that shows whether more steps would still help)."""
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps
    adv = (x + noise).clamp(0, 1)
    best, best_loss, curve = adv.clone(), torch.full((x.shape[0],), -float("inf"), device=x.device), []
    for step in range(steps + 1):
        last = step == steps
        loss, g = _loss(module, adv, y, draws, grad=not last)
        better = loss > best_loss
        best[better], best_loss[better] = adv[better], loss[better]
        curve.append(float(loss.sum()))
        if last:
            break
        adv = adv + alpha * g.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return best, best_loss, curve


@torch.no_grad()
def score(defense, clf: nn.Module, images: torch.Tensor, labels: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """Per image, how many of `draws` fresh draws of the defense classify it correctly."""
    right = torch.zeros(labels.shape[0], dtype=torch.long)
    for j in range(draws):
        out = defense(clf, images, SCORE_SEED + seed * draws + j)
        right += (out.logits.argmax(1).cpu() == labels.cpu()).long()
    return right


@dataclass
class ProtocolConfig:
    model: str = "teaching"
    defense: str = "random_resize_pad"
    options: dict = field(default_factory=dict)  # defense settings (e.g. R-TPT's tune=False)
    data: str = "world"
    eps: float = 4 / 255
    steps: int = 50
    alpha: float | None = None  # None: 2.5 * eps / steps
    eot: int = 1
    score_draws: int = 10
    n: int = 100
    start: int = 0
    batch_size: int = 10
    seed: int = 0
    attack: bool = True  # False: no adaptive attack (clean scoring, transfer)
    clean: bool = True
    transfer: bool = False
    # Settings of the defense the transfer attack is crafted on (e.g. TAPT's adapt=False: its starting
    # prompts); None: the undefended model.
    surrogate: dict | None = None
    method: str = "pgd"  # "pgd": EOT-PGD; "apgd": EOT-APGD-CE and -DLR, per image the worse (`randomized_apgd`)
    device: str | None = None


def evaluate(cfg: ProtocolConfig) -> dict:
    """One draw count of the protocol on images start..start+n-1; the JSON-ready result."""
    model_key, defense_name, options, data, eps, steps = cfg.model, cfg.defense, cfg.options, cfg.data, cfg.eps, cfg.steps
    eot, score_draws, n, start, batch_size, seed = cfg.eot, cfg.score_draws, cfg.n, cfg.start, cfg.batch_size, cfg.seed
    if start % batch_size:
        raise EvalError(f"--start must be a multiple of --batch-size ({batch_size}); got {start}")
    if eot < 1 or score_draws < 1 or steps < 1:
        raise EvalError("--eot, --score-draws and --steps must be at least 1")
    t0 = time.perf_counter()
    model = load_model(model_key, torch.device(cfg.device) if cfg.device else None)
    ds = load_data(data, model, n, start)
    clf = model.classifier(ds.classnames, ds.templates)
    defense = DEFENSES.create(defense_name, **options)
    alpha = step_for_budget(eps, steps) if cfg.alpha is None else cfg.alpha
    undefended = DEFENSES.create("none")
    surrogate = None if cfg.surrogate is None else DEFENSES.create(defense_name, **{**options, **cfg.surrogate})
    out = {k: [] for k in ("clean_right", "adaptive_right", "transfer_right", "best_loss", "undefended_right")}
    curve = [0.0] * (steps + 1)
    for b0 in range(0, ds.labels.shape[0], batch_size):
        x = ds.images[b0:b0 + batch_size].to(model.device)
        y = ds.labels[b0:b0 + batch_size].to(model.device)
        s = seed + (start + b0) // batch_size  # the batch's seed in the whole run, as demo.eval numbers them
        log.info("images %d-%d (%.0f s)", start + b0, start + b0 + len(y) - 1, time.perf_counter() - t0)
        if cfg.clean:
            out["clean_right"] += score(defense, clf, x, y, score_draws, s).tolist()
        if cfg.attack and cfg.method == "apgd":
            right = []
            for loss_name in ("ce", "dlr"):  # fresh module and generator each, as separate attacks
                gen = torch.Generator().manual_seed(s)
                adv, loss, c = eot_apgd(single_draw_module(defense, clf, s), x, y, eps, steps, eot, gen, loss_name)
                right.append(score(defense, clf, quantize_in_budget(adv, x, eps, "linf"), y, score_draws, s))
                out.setdefault(f"apgd_{loss_name}_right", []).extend(right[-1].tolist())
                if loss_name == "ce":
                    out["best_loss"] += loss.tolist()
                    curve = [a + v for a, v in zip(curve, c)]
            out["adaptive_right"] += torch.minimum(*right).tolist()  # per image, the attack that did better
        elif cfg.attack:
            gen = torch.Generator().manual_seed(s)
            adv, loss, c = eot_pgd(single_draw_module(defense, clf, s), x, y, eps, alpha, steps, eot, gen)
            adv = quantize_in_budget(adv, x, eps, "linf")
            out["adaptive_right"] += score(defense, clf, adv, y, score_draws, s).tolist()
            out["best_loss"] += loss.tolist()
            curve = [a + v for a, v in zip(curve, c)]
        if cfg.transfer:
            gen = torch.Generator().manual_seed(s)
            crafted_on = surrogate if surrogate is not None else undefended
            module = clf if surrogate is None else single_draw_module(surrogate, clf, s)
            adv_t, _, _ = eot_pgd(module, x, y, eps, alpha, steps, 1 if surrogate is None else eot, gen)
            adv_t = quantize_in_budget(adv_t, x, eps, "linf")
            out["transfer_right"] += score(defense, clf, adv_t, y, score_draws, s).tolist()
            out["undefended_right"] += score(crafted_on, clf, adv_t, y, 1, s).tolist()
    return {
        "protocol": "randomized", "model": model.key, "defense": {
            "name": defense_name, "title": defense.title or defense_name, "paradigm": defense.paradigm.value,
            "randomized": defense.randomized, "options": options},
        "data": {"source": ds.source, "n": ds.labels.shape[0], "start": start},
        "attack": {"name": f"eot-{cfg.method}", "eps": eps, "alpha": alpha, "steps": steps, "eot": eot,
                   "title": f"EOT-PGD-{steps} (best point)" if cfg.method == "pgd" else
                   f"EOT-APGD-CE and -DLR, {steps} iterations each (best point)"},
        "score_draws": score_draws, "seed": seed, "batch_size": batch_size, "transfer": cfg.transfer,
        "surrogate": cfg.surrogate,
        "attacked": cfg.attack, "labels": ds.labels.tolist(), **{k: v for k, v in out.items() if v},
        "loss_curve": curve, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
    }


def summary(res: dict) -> dict:
    """Accuracies of a (merged) result: per kind, the mean over scoring draws and the share right on every draw."""
    d, n = res["score_draws"], len(res["labels"])
    out = {"n": n, "score_draws": d, "eot": res["attack"]["eot"]}
    for kind in ("clean", "adaptive", "transfer"):
        right = res.get(f"{kind}_right")
        if right:
            out[kind] = {"mean": sum(right) / (n * d), "all": sum(r == d for r in right) / n}
    if res.get("undefended_right"):
        out["transfer_undefended"] = sum(res["undefended_right"]) / n
    out["loss_curve"] = [v / n for v in res["loss_curve"]]
    return out


def merge(parts: list[dict], command: str | None = None) -> dict:
    """Shards of one run (consecutive image ranges, same setting) -> the run's result."""
    parts = sorted(parts, key=lambda p: p["data"]["start"])
    first, expect = parts[0], parts[0]["data"]["start"]
    merged = {**first, "labels": [], "loss_curve": [0.0] * len(first["loss_curve"]), "seconds": 0.0}
    lists = [k for k in first if k.endswith("_right") or k == "best_loss"]  # per-image records
    for k in lists:
        merged[k] = []
    for p in parts:
        same = all(p.get(k) == first.get(k) for k in ("model", "defense", "attack", "score_draws", "seed", "transfer",
                                                       "surrogate", "attacked"))
        if not same or p["data"]["start"] != expect:
            raise EvalError(f"shard at {p['data']['start']} does not continue the run (expected {expect})")
        expect += p["data"]["n"]
        merged["labels"] += p["labels"]
        for k in lists:
            merged[k] += p[k]
        merged["loss_curve"] = [a + b for a, b in zip(merged["loss_curve"], p["loss_curve"])]
        merged["seconds"] += p["seconds"]
    merged["data"] = {**first["data"], "n": len(merged["labels"])}
    if command:
        merged["command"] = command
    return merged


def write(result: dict, out: str) -> Path:
    path = Path(out).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m demo.eval.randomized", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="teaching")
    p.add_argument("--defense", required=True, help="one defense name (randomized or test-time)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a defense setting (repeatable)")
    p.add_argument("--data", default="world", help="world | world-held-out")
    p.add_argument("--eps", type=float, default=4.0, help="L-inf budget in /255 (default 4)")
    p.add_argument("--alpha", type=float, help="step size in /255 (default 2.5 * eps / steps)")
    p.add_argument("--attack", choices=("pgd", "apgd"), default="pgd",
                   help="pgd: EOT-PGD; apgd: EOT-APGD-CE and EOT-APGD-DLR (AutoAttack's version for randomized "
                        "defenses), per image the worse for the defense")
    p.add_argument("--steps", type=int, default=50, help="iterations (AutoAttack: 100)")
    p.add_argument("--eot", type=int, default=1, help="draws of the defense averaged per gradient step")
    p.add_argument("--score-draws", type=int, default=10, help="fresh draws each final image is scored on")
    p.add_argument("--transfer", action="store_true", help="also the same attack crafted on the undefended model")
    p.add_argument("--surrogate-option", action="append", default=[], metavar="NAME=VALUE",
                   help="craft the transfer attack on the defense with this setting changed instead of on the "
                        "undefended model (repeatable), e.g. adapt=false for TAPT's starting prompts")
    p.add_argument("--no-clean", action="store_true", help="skip scoring the clean images (another draw count has it)")
    p.add_argument("--no-attack", action="store_true", help="no adaptive attack (clean images, and --transfer if given)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--start", type=int, default=0, help="first image (a multiple of --batch-size)")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--out", help="write <out>.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("demo").setLevel(logging.INFO)
    exact_float32()
    def settings(items: list[str], flag: str) -> dict:
        out = {}
        for item in items:
            if "=" not in item:
                p.error(f"{flag} expects NAME=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            out[key.strip()] = _value(value.strip())
        return out

    options = settings(args.option, "--option")
    surrogate = settings(args.surrogate_option, "--surrogate-option") or None
    try:
        result = evaluate(ProtocolConfig(
            model=args.model, defense=args.defense, options=options, data=args.data, eps=args.eps / 255.0,
            steps=args.steps, alpha=None if args.alpha is None else args.alpha / 255.0, eot=args.eot,
            score_draws=args.score_draws, n=args.n, start=args.start, batch_size=args.batch_size, seed=args.seed,
            attack=not args.no_attack, clean=not args.no_clean, transfer=args.transfer or bool(surrogate),
            surrogate=surrogate, method=args.attack, device=args.device))
    except (EvalError, ValueError, KeyError) as exc:
        p.error(str(exc))
    result = {"command": "python -m demo.eval.randomized " + shlex.join(argv), **result}
    s = summary(result)
    for kind in ("clean", "adaptive", "transfer"):
        if kind in s:
            print(f"{kind}: mean over {s['score_draws']} draws {100 * s[kind]['mean']:.1f}%, "
                  f"right on every draw {100 * s[kind]['all']:.1f}% (n={s['n']}, EOT {s['eot']})")
    if args.out:
        print(f"wrote {write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
