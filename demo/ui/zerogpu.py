"""GPU functions for ZeroGPU Spaces, which are plain functions everywhere else.

On a ZeroGPU Space (the `spaces` package, `SPACES_ZERO_GPU=true`), `import spaces` comes first (app.py) and
patches torch: in the server process, moving a model to "cuda" only records its tensors, which are packed
away at launch, and any computation outside a GPU function sees placeholders. A GPU is lent for each call
of a function decorated with `@spaces.GPU(duration=...)`: the call runs in a worker process forked once per
decorated function and kept for the next calls (a call that starts while it is busy gets a worker of its
own), with the real tensors on the GPU; arguments and results are pickled across. Hence:

- every event that touches a model calls one of the two module-level functions below, decorated once:
  `run_quick` (a classification, what the model sees, choosing a model: a short duration) or `run_long`
  (attacks, defenses, comparisons: the duration priced from the request). A request passes the name of a
  task registered when the page was built, never a new function (each would fork its own worker);
- `run_long` is a generator: progress, each result column as it is ready, and a heartbeat every
  WATCH_S come back as they happen. Stop closes the generator, and the worker stops at its next
  heartbeat plus at most one encoder pass (the stop flag of the server process does not reach a forked
  worker, so Stop arrives through the heartbeat);
- the models are loaded and moved to "cuda" at startup in the main thread (`models.preload`), as the
  `spaces` docs ask, and the page offers only those; the server process cannot time a pass, so the
  cost of a request, and the GPU duration asked for, come from estimated GPU pass costs
  (`gpu_pass_times`).
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from ..pipeline import USER_ERRORS, budget
from ..pipeline.budget import request_scope
from ..timing import RunCancelled, cancellable

log = logging.getLogger(__name__)

try:
    import spaces  # on a ZeroGPU Space app.py has imported it before torch touched CUDA
except ImportError:
    spaces = None

WATCH_S = 0.2            # heartbeat of a long run: how soon a Stop reaches it
GPU_QUICK_S = 10         # duration asked for a quick event (one or two encoder passes)
GPU_MIN_S, GPU_MAX_S = 15, 120  # bounds of a long run's duration (what such a Space grants)
LOAD_S = 30.0            # a model not loaded at startup is loaded inside the GPU call
# Pass costs on a ZeroGPU card, per image: ESTIMATES (no GPU measured them here). The work per image is
# 2 x the image tower's parameters x its tokens in FLOPs (ViT-B/32: 88 M x 50 tokens, 8.8 GFLOP; ViT-L/14:
# 304 M x 257, 156 GFLOP, as open_clip's model profile counts them), at an assumed 10 TFLOP/s of fp32
# (TF32 stays off for exact answers, `exact_float32`; about a third of the card's fp32 peak), a backward
# pass twice a forward's work, and at least LAUNCH_S per unbatched pass for the kernels' launches.
GPU_FLOPS = 10e12
LAUNCH_S = 0.004


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (or under the `spaces` package's emulation of one)."""
    config = getattr(getattr(spaces, "config", None), "Config", None)
    return bool(getattr(config, "zero_gpu", False))


def gpu_pass_times(loaded) -> budget.PassTimes:
    """Estimated GPU seconds per image of each kind of pass for `loaded` (see GPU_FLOPS)."""
    visual = loaded.clip.visual
    params = sum(p.numel() for p in visual.parameters())
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):  # a ViT: one token per patch, plus CLS
        tokens = (loaded.image_size // visual.conv1.kernel_size[0]) ** 2 + 1
    else:  # a ResNet: about one weight use per 16 x 16 pixels
        tokens = (loaded.image_size // 16) ** 2
    forward = 2.0 * params * tokens / GPU_FLOPS
    return budget.PassTimes(forward=max(LAUNCH_S, forward), grad=max(2 * LAUNCH_S, 3 * forward),
                            batched_forward=max(LAUNCH_S / 16, forward), batched_grad=max(LAUNCH_S / 8, 3 * forward))


@dataclass(frozen=True)
class Task:
    fn: Callable
    # price(args) -> (the request's encoder passes, its model if loaded, else None); without it, none is known
    price: Callable | None = None


_TASKS: dict[str, Task] = {}
_STOPS: dict[int, threading.Event] = {}  # stop flags of the long runs of this process, by run id


def register(fn: Callable, price: Callable | None = None) -> str:
    """Register an event's work when the page is built; requests name it by the key returned."""
    key = f"{len(_TASKS)}:{getattr(fn, '__qualname__', 'task')}"
    _TASKS[key] = Task(fn, price)
    return key


def stop_flag(run_id: int) -> threading.Event:
    return _STOPS.setdefault(run_id, threading.Event())


def forget(run_id: int) -> None:
    _STOPS.pop(run_id, None)


# ----------------------------------------------------------------------------------- durations

def gpu_duration(seconds: float) -> int:
    """The duration to ask for a long run estimated at `seconds`: with headroom, within the bounds."""
    return int(min(GPU_MAX_S, max(GPU_MIN_S, 1.5 * seconds + 10)))


def request_seconds(task: Task, args: tuple) -> float | None:
    """Estimated GPU seconds of a long request; None when its settings are refused (it ends at once)."""
    try:
        passes, loaded = task.price(args)
    except USER_ERRORS:
        return None
    if loaded is None:  # loaded inside the GPU call: its loading, and each pass as a ViT-L/14 gradient pass
        return LOAD_S + 0.05 * passes.total
    return gpu_pass_times(loaded).seconds(passes)


def _quick_duration(*_args, **_kwargs) -> int:
    return GPU_QUICK_S


def _long_duration(task: str, args: tuple, kwargs: dict, run_id: int, owner=None) -> int:
    if _TASKS[task].price is None:
        return GPU_MAX_S
    try:
        seconds = request_seconds(_TASKS[task], args)
    except Exception:  # pricing must never fail a request: ask for the most
        log.warning("could not price %s", task, exc_info=True)
        return GPU_MAX_S
    return GPU_QUICK_S if seconds is None else gpu_duration(seconds)


# --------------------------------------------------------------------------------- GPU functions

def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand freed heap memory back to the system after a run. Each worker thread allocates from its own
    glibc arena, which keeps freed pages: with several runs at once, resident memory otherwise ratchets up
    (measured over a 3-minute mixed load test: +34.5% without this, +6.9% with it)."""
    if _TRIM is not None:
        _TRIM(0)


def _gpu(duration: Callable):
    return spaces.GPU(duration=duration) if spaces is not None else (lambda fn: fn)


@_gpu(_quick_duration)
def run_quick(task: str, args: tuple, kwargs: dict):
    """A quick event that touches a model."""
    return _TASKS[task].fn(*args, **kwargs)


@_gpu(_long_duration)
def run_long(task: str, args: tuple, kwargs: dict, run_id: int, owner=None) -> Iterator[tuple[str, object]]:
    """A long event: yields ("progress", (fraction, text)), ("partial", value), ("tick", None) every
    WATCH_S, and ("done", result) last. Closing it stops the work within one encoder pass. The work runs
    in its own thread, so that the heartbeat goes on while a pass computes."""
    stop, outside = threading.Event(), _STOPS.get(run_id)  # outside: the server's flag, when it is this process

    def should_stop() -> bool:
        return stop.is_set() or (outside is not None and outside.is_set())

    out: queue.SimpleQueue = queue.SimpleQueue()

    def progress(fraction: float, desc: str = "") -> None:
        if should_stop():
            raise RunCancelled("stopped by the user")
        out.put(("progress", (float(fraction), desc)))

    def work() -> None:
        try:
            with cancellable(should_stop), request_scope(owner=owner):
                out.put(("done", _TASKS[task].fn(*args, progress=progress, emit=lambda v: out.put(("partial", v)),
                                                  **kwargs)))
        except BaseException as exc:  # re-raised where the generator is consumed
            out.put(("error", exc))
        finally:
            release_memory()

    thread = threading.Thread(target=work, name="compute", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, value = out.get(timeout=WATCH_S)
            except queue.Empty:
                yield "tick", None
                continue
            if kind == "error":
                raise value
            yield kind, value
            if kind == "done":
                return
    finally:
        stop.set()
        thread.join()


if on_zerogpu():
    budget.assume_pass_times(gpu_pass_times)
