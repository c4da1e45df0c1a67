"""A cost budget per request: estimate the work before starting it, refuse what the server cannot afford.

Every attack and defense declares the encoder passes it needs from its own parameters (`model_calls`,
`predict_passes`, `adaptive_passes`), so a request's total is known before any pass runs. The time per
pass is measured once per loaded model on this machine (a single image forward, forward + backward,
and the same per image in a batch of 16, as test-time views are encoded). Above the host's limit
(`DEMO_MAX_SECONDS`, default 60 s: what a free CPU Space allows a visitor to wait) the request is refused
with the estimate and what to lower. A GPU Space or a teacher's laptop can raise the limit.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from ..timing import Passes, _sync, check_cancelled
from .inputs import InputError

LIMIT_ENV = "DEMO_MAX_SECONDS"
DEFAULT_LIMIT_S = 60.0
_BATCH = 16
# Served requests estimated above HEAVY_S share one compute slot: heavy work runs one at a time, while
# cheap requests (a classification, a one-step attack, a defense on an uploaded image) go ahead beside
# it instead of queueing behind it.
HEAVY_S = 2.0
_HEAVY_SLOT = threading.Lock()
_SCOPE: contextvars.ContextVar = contextvars.ContextVar("demo_request_scope", default=None)
_DRY_RUN: contextvars.ContextVar = contextvars.ContextVar("demo_budget_dry_run", default=False)


class Estimated(Exception):
    """Raised by `check` inside `dry_run()`: the request's estimated seconds, found without running it."""

    def __init__(self, seconds: float):
        super().__init__(f"estimated {seconds:.1f} s")
        self.seconds = seconds


@contextmanager
def dry_run() -> Iterator[None]:
    """Price a request by calling its handler: the budget check raises Estimated before any work."""
    token = _DRY_RUN.set(True)
    try:
        yield
    finally:
        _DRY_RUN.reset(token)


_HEAVY_BY_OWNER: dict[object, int] = {}
_OWNERS_LOCK = threading.Lock()


@dataclass
class _Scope:
    owner: object
    holds_slot: bool = False
    counted: bool = False


@contextmanager
def request_scope(owner: object = None) -> Iterator[None]:
    """One served request: a heavy request admitted inside it holds the compute slot until it ends.
    `owner` (a visitor's session) may have one heavy request running or waiting at a time, so one
    visitor cannot fill the queue with heavy work."""
    scope = _Scope(owner)
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)
        if scope.holds_slot:
            _HEAVY_SLOT.release()
        if scope.counted:
            with _OWNERS_LOCK:
                _HEAVY_BY_OWNER[scope.owner] -= 1
                if not _HEAVY_BY_OWNER[scope.owner]:
                    del _HEAVY_BY_OWNER[scope.owner]


def _admit(seconds: float) -> None:
    """In a served request, wait for the compute slot when the request is heavy (stoppable meanwhile)."""
    scope = _SCOPE.get()
    if scope is None or scope.holds_slot or seconds < HEAVY_S:
        return
    if scope.owner is not None and not scope.counted:
        with _OWNERS_LOCK:
            if _HEAVY_BY_OWNER.get(scope.owner, 0) >= 1:
                raise InputError("Another heavy run of yours is still going or waiting: wait for it to finish, or "
                                 "press Stop, before starting the next one.")
            _HEAVY_BY_OWNER[scope.owner] = _HEAVY_BY_OWNER.get(scope.owner, 0) + 1
            scope.counted = True
    while not _HEAVY_SLOT.acquire(timeout=0.1):
        check_cancelled()
    scope.holds_slot = True


def limit_seconds() -> float:
    raw = os.environ.get(LIMIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_LIMIT_S
    except ValueError:
        value = DEFAULT_LIMIT_S
    return value if value > 0 else DEFAULT_LIMIT_S


@dataclass(frozen=True)
class PassTimes:
    """Seconds per image of each kind of pass on this machine, for one model."""

    forward: float
    grad: float
    batched_forward: float
    batched_grad: float

    def seconds(self, passes: Passes) -> float:
        return (passes.forward * self.forward + passes.grad * self.grad
                + passes.batched_forward * self.batched_forward + passes.batched_grad * self.batched_grad)


_TIMES: dict[tuple[str, str], PassTimes] = {}
_LOCK = threading.Lock()


def _fresh_times_lock() -> None:
    # A GPU worker is forked while a request thread may be pricing a request under this lock (see
    # `loading._fresh_locks`). Only this cache's lock: the compute slot and the owners' counts are never
    # taken in a ZeroGPU server process (requests are admitted inside the GPU workers), and stay as they are.
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_times_lock)


def _best_seconds(fn, repeats: int = 5) -> float:
    """The fastest of a few runs: a pass measured while other work holds the cores would otherwise
    inflate every later estimate for this model."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


_ASSUMED: list = []


def assume_pass_times(estimate) -> None:
    """Take `estimate(loaded) -> PassTimes` instead of measuring: for a server process that cannot time a
    pass (on a ZeroGPU Space the GPU is only lent to its workers)."""
    _ASSUMED.append(estimate)


def pass_times(loaded) -> PassTimes:
    """Measured once per (model, device) and cached; about 24 passes (0.2 s on the teaching model)."""
    key = (loaded.key, str(loaded.device))
    with _LOCK:
        if key in _TIMES:
            return _TIMES[key]
    if _ASSUMED:
        times = _ASSUMED[-1](loaded)
        with _LOCK:
            _TIMES[key] = times
        return times
    clf = loaded.classifier(["a photo", "a drawing"])
    size = loaded.image_size

    def timed(n: int, grad: bool) -> float:
        # Any pixels do for a timing; a local generator keeps the global one out of it (see models.rng).
        x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(loaded.device)

        def run():
            if grad:
                xg = x.clone().requires_grad_(True)
                clf(xg).sum().backward()
            else:
                with torch.no_grad():
                    clf(x)
            _sync(loaded.device)  # a GPU runs asynchronously: without it the time is the kernels' launch

        run()  # warm-up
        return _best_seconds(run) / n

    times = PassTimes(timed(1, False), timed(1, True), timed(_BATCH, False), timed(_BATCH, True))
    with _LOCK:
        _TIMES[key] = times
    return times


def comparison_passes(attack, defenses: Iterable, adaptive: bool) -> Passes:
    """One comparison: clean and attacked predictions, the attack, each defense's prediction, and in
    adaptive mode one attack through each defense (each attack step is one call of its module)."""
    defenses = list(defenses)
    calls = attack.model_calls()
    total = Passes(forward=2) + Passes(grad=calls)
    for d in defenses:
        total = total + d.predict_passes()
        if adaptive and d.name != "none":
            total = total + calls * d.adaptive_passes()
    return total


def defense_passes(defenses: Iterable) -> Passes:
    """Classifying one image through each defense (the Defend button)."""
    total = Passes(forward=2)
    for d in defenses:
        total = total + d.predict_passes()
    return total


def check(loaded, passes: Passes, advice: list[str]) -> float:
    """The estimated seconds of `passes` on this machine; InputError above the limit, with the estimate."""
    seconds = pass_times(loaded).seconds(passes)
    if _DRY_RUN.get():
        raise Estimated(seconds)
    limit = limit_seconds()
    if seconds > limit:
        lower = "; ".join(advice) if advice else "fewer attack steps"
        raise InputError(f"This request needs about {passes.total:,.0f} image-encoder passes, about {seconds:.0f} s "
                         f"on this server, more than its limit of {limit:.0f} s per request. To bring it down: "
                         f"{lower}.")
    _admit(seconds)
    return seconds


def advice(attack, defenses: Iterable, adaptive: bool) -> list[str]:
    """What to lower, from the parts that cost the most."""
    out = []
    if attack.model_calls() > 20:
        out.append(f"fewer attack steps (now {attack.model_calls()})")
    for d in defenses:
        if getattr(d, "views", 0) > 16:
            out.append(f"fewer {d.title.split(' (')[0]} views (now {d.views})")
        if adaptive and getattr(d, "eot_draws", 1) > 2:
            out.append(f"fewer {d.title.split(' (')[0]} EOT draws (now {d.eot_draws})")
    if adaptive:
        out.append("the oblivious attack mode (one attack instead of one per defense)")
    return out


def estimate(loaded, attack, defenses: Iterable, adaptive: bool) -> tuple[Passes, float, float]:
    """(passes, estimated seconds, the limit) of one comparison, without running it."""
    defenses = list(defenses)
    passes = comparison_passes(attack, defenses, adaptive)
    return passes, pass_times(loaded).seconds(passes), limit_seconds()
