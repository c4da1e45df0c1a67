"""Running the cells of a sweep as Ray tasks: skip the finished ones, bound the concurrency, save each
result the moment it arrives, retry cells whose worker died, and report progress with an ETA.

Ray is imported here, inside functions only: the rest of the project never needs it.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import store as S
from .cells import command, record, run_cell
from .grid import Cell

ROOT = Path(__file__).resolve().parents[2]
# What a cluster does not need when the project is shipped to it (the assets it does need are small).
SHIP_EXCLUDES = [".venv", ".git", "sweeps", "tmp", "docs", "tests", "**/__pycache__"]


class SweepError(RuntimeError):
    """The sweep cannot run: Ray is missing or the cluster cannot be reached."""


def _ray():
    try:
        import ray
    except ImportError:
        raise SweepError("python -m demo.sweep needs Ray: pip install 'ray==2.60.0' (listed in requirements-dev.txt)") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None, ship_code: bool = False) -> dict:
    """Join the cluster at `address`, or start a local one with `num_cpus` CPUs (default: this machine's),
    unless Ray is already initialized here. Returns {"cpus", "gpus", "started"}."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        runtime_env = {"working_dir": str(ROOT), "excludes": SHIP_EXCLUDES} if ship_code else None
        try:
            if address:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         # results are small dicts: a small object store leaves the memory to the workers
                         object_store_memory=256 * 2**20, runtime_env=runtime_env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"could not {'join the Ray cluster at ' + address if address else 'start Ray'}: {exc}") from exc
        started = True
    res = ray.cluster_resources()
    return {"cpus": float(res.get("CPU", 0)), "gpus": float(res.get("GPU", 0)), "started": started}


def shutdown() -> None:
    _ray().shutdown()


@dataclass
class Options:
    """How cells are run. threads: CPU threads per cell (also the CPUs each task reserves); gpus_per_cell:
    GPUs each task reserves when the cells run on cuda (fractions share a GPU); retries: extra attempts
    after a worker dies; crash: a test hook, see `cells._crash_once`."""

    threads: int = 1
    gpus_per_cell: float = 1.0
    max_parallel: int | None = None
    retries: int = 2
    force: bool = False
    progress_every: float = 30.0
    crash: tuple[str, str] | None = None
    stream: object = field(default=None, repr=False)


def slots(cluster: dict, opts: Options, on_gpu: bool) -> int:
    """How many cells can run at once on the cluster, bounded by --max-parallel."""
    n = cluster["cpus"] // max(opts.threads, 1)
    if on_gpu:
        n = min(n, math.floor(cluster["gpus"] / opts.gpus_per_cell + 1e-9))
    n = int(max(n, 1))
    return min(n, opts.max_parallel) if opts.max_parallel else n


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


class Progress:
    """Counts cells done / running / failed / queued and estimates the time left from this run's rate."""

    def __init__(self, total: int, cached: int, stream=None):
        self.total, self.cached, self.done, self.failed, self.running = total, cached, 0, 0, 0
        self.start, self.stream = time.perf_counter(), stream or sys.stderr

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def line(self) -> str:
        left = self.total - self.cached - self.done - self.failed
        queued = left - self.running
        eta = f"ETA {_duration(left * self.elapsed / self.done)}" if self.done else "ETA after the first cell"
        return (f"sweep: {self.cached + self.done}/{self.total} done ({self.cached} from earlier runs), "
                f"{self.running} running, {self.failed} failed, {queued} queued; {_duration(self.elapsed)} elapsed, "
                + (eta if left else "finished"))

    def show(self, note: str = "") -> None:
        print(self.line() + (f"  [{note}]" if note else ""), file=self.stream, flush=True)


def plan(cells: list[Cell], store: S.Store, threads: int, force: bool = False) -> tuple[list[tuple], list[tuple]]:
    """(to run, already finished): each a list of (cell, key, identity)."""
    finished = {} if force else store.finished()
    todo, done = [], []
    for cell in cells:
        ident = S.identity(cell, threads)
        k = S.key(ident)
        (done if k in finished else todo).append((cell, k, ident))
    return todo, done


def run(cells: list[Cell], store: S.Store, cluster: dict, opts: Options, on_gpu: bool = False) -> dict:
    """Run every unfinished cell on the connected cluster, saving each as it finishes.

    Returns {"ran", "cached", "failed": [names], "seconds", "cells_per_hour", "slots"}.
    """
    ray = _ray()
    from ray.exceptions import RayError

    todo, done = plan(cells, store, opts.threads, opts.force)
    width = slots(cluster, opts, on_gpu)
    progress = Progress(len(cells), len(done), opts.stream)
    remote = ray.remote(max_calls=0)(run_cell)  # max_calls=0: a worker keeps its loaded models between cells
    resources = {"num_cpus": opts.threads, "num_gpus": opts.gpus_per_cell if on_gpu else 0}
    queue, inflight, failed, ran = list(todo), {}, [], 0

    def refill() -> None:
        while queue and len(inflight) < width:
            cell, k, ident = queue.pop(0)
            ref = remote.options(max_retries=opts.retries, retry_exceptions=False, name=cell.name,
                                 **resources).remote(cell, opts.threads, ident["weights"], opts.crash)
            inflight[ref] = (cell, k, ident)
        progress.running = len(inflight)

    refill()
    progress.show(f"{len(todo)} to run, {width} at a time")
    last = time.perf_counter()
    try:
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=opts.progress_every)
            for ref in ready:
                cell, k, ident = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except RayError as exc:  # after the retries: a worker that kept dying, or an error in the cell
                    failed.append(cell.name)
                    progress.failed += 1
                    cause = getattr(exc, "cause", None) or exc
                    store.save_failure(cell.name, k, {
                        "name": cell.name, "key": k, "command": command(cell, opts.threads),
                        "error": f"{type(cause).__name__}: {cause}".strip()[-4000:],
                        "attempts_allowed": 1 + opts.retries, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
                    note = f"FAILED {cell.name}: {type(cause).__name__} (see {store.path(cell.name, k, failed=True)})"
                else:
                    # Saved before anything else happens, so a driver killed now loses nothing finished.
                    store.save(cell.name, k, record(cell, k, ident, opts.threads, out))
                    progress.done += 1
                    ran += 1
                    note = f"{cell.name} in {out['result']['seconds']:.0f} s"
                refill()
                progress.show(note)
                last = time.perf_counter()
            if not ready and time.perf_counter() - last >= opts.progress_every:
                progress.show()
                last = time.perf_counter()
    except KeyboardInterrupt:
        for ref in inflight:
            ray.cancel(ref, force=True)
        print(f"interrupted: {progress.cached + progress.done} cells are saved in {store.cells_dir}; "
              "the same command continues where this one stopped", file=progress.stream, flush=True)
        raise
    seconds = progress.elapsed
    return {"ran": ran, "cached": len(done), "failed": failed, "seconds": seconds, "slots": width,
            "cells_per_hour": ran / seconds * 3600 if ran and seconds > 0 else None}


def sweep(cell_list: list[Cell], out: str | Path, cluster: dict, opts: Options, command: str, grid: object,
          device: str, skipped: list[str] | None = None) -> tuple[dict, dict]:
    """Record the sweep in `<out>/sweep.json`, run its unfinished cells, merge the folder.
    Returns (what `run` returns, what `merge.merge` returns)."""
    from . import merge

    store = S.Store(out)
    cells_meta = []
    for c in cell_list:
        cells_meta.append({"name": c.name, "key": S.key(S.identity(c, opts.threads)), "run": c.run, "model": c.model,
                           "argv": list(c.argv)})
    S.write_json(Path(out) / merge.MANIFEST, {"command": command, "grid": grid, "device": device,
                                              "threads": opts.threads, "skipped": skipped or [], "cells": cells_meta})
    res = run(cell_list, store, cluster, opts, on_gpu=device == "cuda")
    return res, merge.merge(out)
