"""`python -m demo.eval.sanity`: the attack sanity checks of Carlini et al., "On Evaluating Adversarial
Robustness" (2019, arXiv 1902.06705), run on the teaching world and printed with the results.

Each check can fail, and a failure is reported, not hidden:

- accuracy does not rise with eps (PGD-10, step 2.5 eps / 10, eps 0..32/255);
- at 32/255 the undefended model is near 0 (at most 2%);
- more steps or more restarts do not raise accuracy (PGD-50 and PGD-10 x 5 restarts vs PGD-10);
- a PGD whose gradient has the wrong sign does no better than random noise of the same size.

"Rise" means beyond the noise: the two 95% Wilson intervals are apart. The models: the undefended one
and one robust model (TeCoA by default), because on an undefended model at 4/255 every attack reaches
nearly 0 and a check of steps or restarts could not fail there.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from .. import world
from ..attacks import ATTACKS, quantize
from ..defenses import DEFENSES
from ..models.loading import load_model
from . import metrics as M
from .publish import markdown as md
from .run import attack_params, load_world

EPS_SWEEP = (0, 1, 2, 4, 8, 16, 32)
NEAR_ZERO = 0.02


class _FlipGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class WrongSign(nn.Module):
    """The model with the gradient to its input negated: an attack on it walks *down* the loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.num_classes = model, getattr(model, "num_classes", None)

    def forward(self, x):
        return self.model(_FlipGradient.apply(x))


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _pgd(model, x, y, eps: int, steps: int = 10, seed: int = 0) -> torch.Tensor:
    if eps == 0:
        return x
    return ATTACKS.create("pgd", **attack_params("pgd", eps, None, steps))(model, x, y, seed=seed).adv_images


def run_checks(n: int = 200, robust: str | None = "tecoa", seed: int = 0) -> dict:
    start = time.perf_counter()
    loaded = load_model("teaching")
    x, y = load_world(n, loaded.image_size, "seen")
    x = quantize(x)
    clf = loaded.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    models = {"undefended": clf}
    if robust:
        models[robust] = DEFENSES.create(robust).as_module(clf, seed)
    checks = []

    def check(name: str, model: str, passed: bool, values: dict, rule: str) -> None:
        checks.append({"check": name, "model": model, "passed": bool(passed), "values": values, "rule": rule})

    for key, model in models.items():
        curve = {e: _acc(model, _pgd(model, x, y, e, seed=seed), y) for e in EPS_SWEEP}
        rises = [(a, b) for a, b in zip(EPS_SWEEP, EPS_SWEEP[1:]) if M.significantly_above(curve[b], curve[a], n)]
        check("accuracy does not rise with eps", key, not rises, {f"{e}/255": curve[e] for e in EPS_SWEEP},
              "no eps whose accuracy is above the previous eps's beyond the noise")
        if key == "undefended":
            check("near 0 at 32/255", key, curve[32] <= NEAR_ZERO, {"32/255": curve[32]},
                  f"undefended accuracy at 32/255 at most {NEAR_ZERO:.0%}")
        base = curve[4]
        more = _acc(model, _pgd(model, x, y, 4, steps=50, seed=seed), y)
        check("more steps do not help the model", key, not M.significantly_above(more, base, n),
              {"PGD-10": base, "PGD-50": more}, "PGD-50 accuracy not above PGD-10's beyond the noise")
        alive = torch.ones_like(y, dtype=torch.bool)
        for r in range(5):  # per-image worst case over restarts
            with torch.no_grad():
                alive &= model(_pgd(model, x, y, 4, seed=seed + 100 + r)).argmax(1) == y
        restarts = float(alive.float().mean())
        check("more restarts do not help the model", key, not M.significantly_above(restarts, base, n),
              {"PGD-10": base, "PGD-10 x 5 restarts": restarts}, "worst case over 5 restarts not above one run's")
        wrong = _acc(model, _pgd(WrongSign(model), x, y, 4, seed=seed), y)
        g = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
        noise = _acc(model, quantize((x + signs * 4 / 255).clamp(0, 1)), y)
        check("a wrong-sign gradient does no better than noise", key, not M.significantly_above(noise, wrong, n),
              {"wrong-sign PGD-10": wrong, "random +-4/255 noise": noise, "PGD-10": base},
              "accuracy under the wrong-sign attack not below random noise's beyond the noise")
    return {"n": n, "data": "world", "models": list(models), "seed": seed, "checks": checks,
            "threads": torch.get_num_threads(), "seconds": time.perf_counter() - start}


def markdown(result: dict) -> str:
    n = result["n"]
    rows = [[c["check"], c["model"], "passed" if c["passed"] else "**FAILED**",
             ", ".join(f"{k} {M.fmt_ci(v, n)}" for k, v in c["values"].items())] for c in result["checks"]]
    return md.text(["check", "model", "outcome", "values"], rows)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m demo.eval.sanity", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="teaching-world images (default 200)")
    p.add_argument("--robust", default="tecoa", help="the robust model checked besides the undefended one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write <out>.json")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    result = {"command": "python -m demo.eval.sanity " + shlex.join(argv), **run_checks(args.n, args.robust, args.seed)}
    sys.stdout.write(markdown(result))
    if args.out:
        Path(args.out + ".json").parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
