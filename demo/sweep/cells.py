"""Running one cell, in whatever process Ray gives it: pin the thread count, check the weights, evaluate.

`run_cell` is plain Python (the Ray task wraps it), so a cell can also be run and tested without Ray.
The model is loaded by `demo.models.loading.load_model`, which caches it per process: a Ray worker
process that runs several cells loads each model once.
"""
from __future__ import annotations

import os
import shlex
import socket
import time
from pathlib import Path

from .grid import Cell, config

# (model, device) pairs this process has evaluated: the first cell of a model in a worker pays its load.
_SEEN: set[tuple[str, str]] = set()


class WeightsMismatchError(RuntimeError):
    """The worker's weight files differ from those the cell's key was computed from (a cluster node with
    other assets): its result would be stored under a key that does not describe it."""


def command(cell: Cell, threads: int) -> str:
    """The stand-alone command that computes the same result as the cell."""
    return (f"OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python -m demo.eval "
            + shlex.join(cell.argv))


def _crash_once(cell: Cell, crash: tuple[str, str] | None) -> None:
    """For tests of fault tolerance: kill this worker process the first time it runs cell `crash[0]`; the
    marker file `crash[1]` remembers that it happened, so the retry succeeds."""
    if crash is None or crash[0] != cell.name:
        return
    marker = Path(crash[1])
    if not marker.exists():
        marker.write_text(f"killed pid {os.getpid()}\n")
        os._exit(1)


def run_cell(cell: Cell, threads: int, expected_weights: dict[str, str] | None = None,
             crash: tuple[str, str] | None = None) -> dict:
    """Evaluate one cell; returns {"result": the `demo.eval` result dict, "worker": where and how it ran}.

    Raises:
        WeightsMismatchError: the weights here are not the ones the key describes.
        EvalError and the other errors of `demo.eval.run.evaluate`: bad input (not retried).
    """
    import torch

    from ..eval.run import evaluate
    from . import store

    _crash_once(cell, crash)
    # CPU kernels split their sums by thread, so results depend on the count: pin it, whatever the
    # worker's environment says.
    torch.set_num_threads(int(threads))
    cfg = config(cell)
    if expected_weights is not None:
        here = store.weights(cfg.model, cfg.defenses)
        if here != expected_weights:
            differ = sorted(k for k in set(here) | set(expected_weights) if here.get(k) != expected_weights.get(k))
            raise WeightsMismatchError(f"cell {cell.name}: weight files differ on {socket.gethostname()}: "
                                       f"{', '.join(differ)}")
    model_key = (cfg.model, str(cfg.device))
    first = model_key not in _SEEN
    start = time.perf_counter()
    result = evaluate(cfg)
    _SEEN.add(model_key)
    return {"result": result,
            "worker": {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                       "first_cell_of_model_in_process": first, "wall_s": time.perf_counter() - start}}


def record(cell: Cell, cell_key: str, ident: dict, threads: int, out: dict) -> dict:
    """The stored form of a finished cell: the `demo.eval` result (as `python -m demo.eval --out` writes
    it, so `demo.eval.publish.published` reads it), plus the sweep's metadata under "sweep"."""
    return {"command": command(cell, threads), **out["result"],
            "sweep": {"name": cell.name, "key": cell_key, "run": cell.run, "model": cell.model,
                      "argv": list(cell.argv), "threads": threads, "weights": ident["weights"],
                      "worker": out["worker"], "finished": time.strftime("%Y-%m-%d %H:%M:%S")}}
