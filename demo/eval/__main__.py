"""`python -m demo.eval`: robustness of a model under one attack, optionally through defenses.

Example (the numbers in docs/results.md come from a command like this one):

    python -m demo.eval --model teaching --attack pgd --eps 4 --steps 10 --n 500 --defenses all --adaptive \\
        --out docs/results

--eps and --alpha are in /255 for L-inf budgets, as in the app; L2 radii and other parameters (--set
c=10) are given as they are. Prints a markdown table; with --out writes <out>.json and <out>.md,
both recording the exact command line.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

from ..attacks import ATTACKS
from ..models.loading import ModelLoadError, exact_float32
from ..registry import UnknownNameError
from .publish import report
from .run import EvalConfig, EvalError, attack_params, evaluate, make_defense


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="teaching", help="zoo key or model id (e.g. local-dir:/path); default teaching")
    p.add_argument("--attack", default="pgd", help=f"one of: {', '.join(ATTACKS.names())}")
    p.add_argument("--eps", type=float, help="budget; in /255 for L-inf attacks (4 means 4/255), L2 radius otherwise")
    p.add_argument("--alpha", type=float, help="step size, same units as --eps")
    p.add_argument("--steps", type=int, help="attack steps")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other attack parameter (repeatable), e.g. --set c=10 --set kappa=5")
    p.add_argument("--targeted", action="store_true", help="attack towards a random wrong class per image")
    p.add_argument("--n", type=int, default=500, help="number of images (default 500)")
    p.add_argument("--start", type=int, default=0,
                   help="first image (default 0): images start..start+n-1 of the data, a shard of a longer run; "
                        "a multiple of --batch-size")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack and defense randomness")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--data", default="world",
                   help="world | world-held-out | a folder FOLDER/<class name>/*.png|jpg (default world)")
    p.add_argument("--defenses", default="",
                   help="comma-separated defense names, or 'all' for every registered one (default: none); "
                        "stack:TT+TTA+TF stacks a training-time, a test-time and a training-free one (e.g. "
                        "stack:tecoa+rtpt+jpeg, 'none' leaves a slot empty; 'stack' is that default)")
    p.add_argument("--adaptive", action="store_true", help="also attack each defense adaptively (BPDA/EOT)")
    p.add_argument("--eot", type=int, help="EOT draws per attack step for every randomized defense (default: each "
                                            "defense's own)")
    p.add_argument("--attack-model", metavar="KEY",
                   help="craft the attack on this model and answer with --model (a transfer attack; default: --model)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", help="write <out>.json and <out>.md, e.g. docs/results")
    return p


def _defense_names(spec: str) -> list[str]:
    from ..defenses import DEFENSES

    if spec.strip() == "all":
        return DEFENSES.names()
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        make_defense(name)  # raises with the list of valid names (or a stack's valid parts)
    return names


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    if args.attack not in ATTACKS:
        raise EvalError(f"unknown attack {args.attack!r}; choose one of: {', '.join(ATTACKS.names())}")
    extra = {}
    for item in args.set:
        if "=" not in item:
            raise EvalError(f"--set expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        extra[key.strip()] = value.strip()
    if args.n < 1 or args.batch_size < 1:
        raise EvalError("--n and --batch-size must be at least 1")
    if args.eot is not None and args.eot < 1:
        raise EvalError("--eot must be at least 1")
    return EvalConfig(
        model=args.model, attack=args.attack, params=attack_params(args.attack, args.eps, args.alpha, args.steps, extra),
        n=args.n, seed=args.seed, batch_size=args.batch_size, data=args.data, defenses=_defense_names(args.defenses),
        adaptive=args.adaptive, targeted=args.targeted, device=args.device, eot=args.eot,
        start=args.start, attack_model=args.attack_model,
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the command; returns the result dict (raises SystemExit(2) on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("demo").setLevel(logging.INFO)  # our progress lines, not every library's chatter
    exact_float32()  # the published numbers are fp32 on every device
    try:
        result = evaluate(config_from_args(args))
    except (EvalError, UnknownNameError, ModelLoadError, ValueError) as exc:
        parser.error(str(exc))
    result = {"command": "python -m demo.eval " + shlex.join(argv), **result}
    print(report.markdown(result))
    if args.out:
        for path in report.write(result, args.out):
            print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
