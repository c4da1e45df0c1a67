"""`python -m demo.eval.suite`: the published evaluation, as the list of `demo.eval` runs behind it.

    python -m demo.eval.suite run              # every run whose JSON is missing, two at a time
    python -m demo.eval.suite run --only aa4_training_time_seen --force
    python -m demo.eval.suite report           # docs/results.md and docs/leaderboard.md from the JSONs

Each run is one `python -m demo.eval` (or `demo.eval.sanity`) command line, written to
docs/results/<name>.json with the command and its wall time inside. Runs are split so two can share
2 cores (one thread each); `report` only reads what is there and says which runs are missing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .published import RESULTS_DIR

MAIN = "none,tecoa,fare,pmg_aft,apt,clipure,jpeg,bit_depth,median"
COUNTER = "none,ttc,random_resize_pad,anti_adversary"
TRAINING_TIME = "tecoa,fare,pmg_aft,apt"
TRAINING_FREE_AA = "jpeg,median,bit_depth,clipure"
PGD4 = "--attack pgd --eps 4 --steps 10 --n 500 --adaptive"
EOT = "--attack pgd --eps 4 --steps 10 --n 200 --adaptive"


def _runs() -> dict[str, str]:
    runs = {}
    for split, data in (("seen", ""), ("held_out", " --data world-held-out")):
        runs[f"pgd4_main_{split}"] = f"{PGD4}{data} --defenses {MAIN}"
        runs[f"pgd4_counter_{split}"] = f"{PGD4}{data} --defenses {COUNTER}"
        runs[f"pgd4_tpt_{split}"] = f"{PGD4}{data} --defenses none,tpt"
        # batch 10: 64 views of 50 images with gradients need ~19 GB; its adaptive attack through 64 views
        # with gradients costs ~5.5 s per image on one core, the largest run of the suite
        runs[f"pgd4_rtpt_{split}"] = f"{PGD4}{data} --batch-size 10 --defenses none,rtpt"
    for eps in (1, 4):
        runs[f"aa{eps}_training_time_seen"] = f"--attack autoattack --eps {eps} --n 200 --defenses {TRAINING_TIME} --adaptive"
    # Adaptive AutoAttack through the deterministic training-free defenses (BPDA where a step has no
    # gradient): ~1 s per image on one core. The randomized and test-time defenses, and Anti-adversary's
    # inner gradient steps, cost 4-60x more per attack step; their rows stay PGD-only.
    runs["aa4_training_free_seen"] = f"--attack autoattack --eps 4 --n 200 --defenses {TRAINING_FREE_AA} --adaptive"
    for draws in (1, 2, 4, 8, 16):
        runs[f"eot_rrp_{draws}"] = f"{EOT} --defenses random_resize_pad --eot {draws}"
    for draws in (1, 2, 4):
        runs[f"eot_ttc_{draws}"] = f"{EOT} --defenses ttc --eot {draws}"
    # R-TPT: 100 images, as one draw already costs ~5.5 s per image (TPT's adaptive accuracy is at the
    # undefended model's, so more draws have nothing left to lower there).
    for draws in (1, 2):
        runs[f"eot_rtpt_{draws}"] = f"{EOT.replace('--n 200', '--n 100')} --batch-size 10 --defenses rtpt --eot {draws}"
    return {name: f"python -m demo.eval --model teaching {args} --out docs/results/{name}" for name, args in runs.items()} | {
        "sanity": "python -m demo.eval.sanity --n 200 --out docs/results/sanity"}


RUNS = _runs()


def missing(folder: Path = RESULTS_DIR) -> list[str]:
    return [name for name in RUNS if not (folder / f"{name}.json").is_file()]


def _run_one(name: str, root: Path) -> tuple[str, int, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    log = (root / "docs" / "results" / f"{name}.log").open("w")
    rc = subprocess.call(shlex.split(RUNS[name]), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    return name, rc, time.perf_counter() - start


def run(names: list[str], jobs: int) -> int:
    root = RESULTS_DIR.parents[1]
    (root / "docs" / "results").mkdir(parents=True, exist_ok=True)
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for name, rc, seconds in pool.map(lambda n: _run_one(n, root), names):
            print(f"{name}: {'ok' if rc == 0 else f'failed (exit {rc}), see docs/results/{name}.log'} in {seconds:.0f} s")
            failed += rc != 0
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.eval.suite", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the evaluations whose results are missing")
    r.add_argument("--only", nargs="+", choices=sorted(RUNS), help="these runs only")
    r.add_argument("--force", action="store_true", help="rerun even when the result exists")
    r.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    sub.add_parser("list", help="print every run's command")
    sub.add_parser("report", help="write docs/results.md and docs/leaderboard.md from the results")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, cmd in RUNS.items():
            print(f"{name}: {cmd}")
        return 0
    if args.cmd == "run":
        names = args.only or (list(RUNS) if args.force else missing())
        if not args.force:
            names = [n for n in names if n in missing()]
        return 1 if run(names, args.jobs) else 0
    from . import tables

    for path in tables.write_all():
        print(f"wrote {path}")
    if missing():
        print("not run yet: " + ", ".join(missing()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
