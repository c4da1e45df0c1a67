"""`python -m demo.eval.suite`: run, resume and report the published evaluation (`demo.eval.runs`).

    python -m demo.eval.suite run              # what is missing, two processes at a time, resuming shards
    python -m demo.eval.suite run --only aa4_ttc_seen --jobs 2
    python -m demo.eval.suite run --only aa4_training_time_seen --force
    python -m demo.eval.suite status           # per run: done, or images done of the total
    python -m demo.eval.suite merge            # merge every run whose shards are all there
    python -m demo.eval.suite report           # docs/results.md and docs/leaderboard.md from the JSONs

Each run or shard is one `python -m demo.eval` (or `demo.eval.sanity`) process with one thread, its result
written at once with the command and its wall time inside; a run split into shards is merged into its
docs/results/<name>.json as soon as its last shard is written. `report` only reads what is there and
says which runs are missing or part-done.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from . import randomized, runs as R
from .assemble import merge
from .publish import report
from .publish.published import RESULTS_DIR


def merge_ready(folder: Path = RESULTS_DIR) -> list[str]:
    """Merge every sharded run whose shards are all written and whose result is missing; returns them."""
    merged = []
    for name in R.SHARD_SIZE:
        if (folder / f"{name}.json").is_file():
            continue
        done, total = R.progress(name, folder)
        if done == total:
            command = R.RUNS[name]
            if "demo.eval.randomized" in command:  # the protocol's own per-draw records
                randomized.write(randomized.merge(R.shard_results(name, folder), command), str(folder / name))
            else:
                report.write(merge(R.shard_results(name, folder), command=command), str(folder / name))
            merged.append(name)
    return merged


def _work(names: list[str], force: bool, folder: Path) -> list[tuple[str, str, Path]]:
    """(label, command, log file) per process to start: whole runs, or the missing shards of sharded ones."""
    out = []
    order = sorted(names, key=lambda n: R.PRIORITY.index(n) if n in R.PRIORITY else len(R.PRIORITY))
    for name in order:
        if name in R.SHARD_SIZE:
            done = {s.start for s in R.done_shards(name, folder)} if not force else set()
            out += [(f"{name}[{s.start}:{s.start + s.n}]", s.command, s.path.with_suffix(".log"))
                    for s in R.shards(name, folder) if s.start not in done]
        else:
            out.append((name, R.RUNS[name], folder / f"{name}.log"))
    return out


def _run_one(label: str, command: str, log_path: Path) -> tuple[str, int, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = shlex.split(command)
    if argv[0] == "python":  # the published command, run by this interpreter (a venv's `python` may not be on PATH)
        argv[0] = sys.executable
    start = time.perf_counter()
    with log_path.open("w") as log:
        rc = subprocess.call(argv, cwd=R.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return label, rc, time.perf_counter() - start


def run(names: list[str], jobs: int, force: bool = False, folder: Path = RESULTS_DIR) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    if force:  # a forced sharded run starts over: its merged result is recomputed from fresh shards
        for name in names:
            (folder / f"{name}.json").unlink(missing_ok=True)
    work = _work(names, force, folder)
    print(f"{len(work)} process(es) to run, {max(1, jobs)} at a time")
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_one, *w) for w in work]
        for fut in as_completed(futures):
            label, rc, seconds = fut.result()
            print(f"{label}: {'ok' if rc == 0 else f'failed (exit {rc})'} in {seconds:.0f} s", flush=True)
            failed += rc != 0
            for name in merge_ready(folder):
                print(f"{name}: all shards done, merged into {folder / name}.json", flush=True)
    return failed


def status(folder: Path = RESULTS_DIR) -> list[str]:
    lines = []
    for name in R.RUNS:
        if (folder / f"{name}.json").is_file():
            lines.append(f"{name}: done")
        elif name in R.SHARD_SIZE:
            done, total = R.progress(name, folder)
            lines.append(f"{name}: {done} of {total} images ({len(R.done_shards(name, folder))} of "
                         f"{len(R.shards(name, folder))} shards)")
        else:
            lines.append(f"{name}: not run")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.eval.suite", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the evaluations (or shards) whose results are missing")
    r.add_argument("--only", nargs="+", choices=sorted(R.RUNS), help="these runs only")
    r.add_argument("--force", action="store_true", help="rerun even when the result exists")
    r.add_argument("--jobs", type=int, default=2, help="processes at a time, one thread each (default 2)")
    sub.add_parser("list", help="print every run's command (and its shards')")
    sub.add_parser("status", help="which runs are done, and how far the sharded ones are")
    sub.add_parser("merge", help="merge the sharded runs whose shards are all done")
    sub.add_parser("report", help="write docs/results.md and docs/leaderboard.md from the results")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, cmd in R.RUNS.items():
            print(f"{name}: {cmd}")
            for s in R.shards(name):
                print(f"  shard {s.start}: {s.command}")
        return 0
    if args.cmd == "status":
        print("\n".join(status()))
        return 0
    if args.cmd == "merge":
        print("\n".join(f"merged {n}" for n in merge_ready()) or "nothing to merge")
        return 0
    if args.cmd == "run":
        names = args.only or list(R.RUNS)
        if not args.force:
            names = [n for n in names if n in R.missing()]
        return 1 if run(names, args.jobs, args.force) else 0
    from .publish import tables

    merge_ready()
    for path in tables.write_all():
        print(f"wrote {path}")
    if R.missing():
        print("not run yet: " + ", ".join(R.missing()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
