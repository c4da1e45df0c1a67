"""`python -m demo.bench.load`: see the package docstring."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __doc__ as DOC


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.bench.load", description=DOC.splitlines()[0])
    p.add_argument("--model", default="teaching",
                   help="the app's startup model: any id the app takes, or vit-b-32-random (default: %(default)s)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5, help="comparisons per client (default: %(default)s)")
    p.add_argument("--defenses", default="tecoa,tpt,ttc",
                   help="training-time,test-time,training-free defenses (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="bound on the whole run in seconds (default: %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--mixed", action="store_true",
                   help="mixed workload instead: cheap and heavy requests, cancels and disconnects "
                        "(demo/bench/load/mixed.py)")
    p.add_argument("--minutes", type=float, default=3.0, help="with --mixed: how long the load runs")
    a = p.parse_args(argv)
    if a.mixed:
        from .mixed import run

        return run(a.model, a.clients, a.minutes, a.out, a.startup_timeout)
    defenses = [s.strip() for s in a.defenses.split(",")]
    if len(defenses) != 3:
        p.error("--defenses takes three names: training-time,test-time,training-free")
    from .steady import run

    command = "python -m demo.bench.load " + " ".join(sys.argv[1:] if argv is None else argv)
    return run(a.model, a.clients, a.rounds, defenses, a.out, command, a.timeout, a.startup_timeout)


if __name__ == "__main__":
    sys.exit(main())
