"""Wall-clock timing and model-pass counting shared by attacks, defenses and the app."""
from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch


def _sync(device: torch.device | None) -> None:
    # CUDA kernels are asynchronous; without a sync the timer measures only the launch.
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timings:
    """Milliseconds per named stage, in insertion order."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, ms: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + ms

    def merge(self, other: "Timings", prefix: str = "") -> None:
        for k, v in other.ms.items():
            self.add(prefix + k, v)

    @property
    def total(self) -> float:
        return sum(self.ms.values())

    def as_dict(self) -> dict[str, float]:
        return dict(self.ms)


@contextmanager
def timer(name: str, timings: Timings, device: torch.device | None = None) -> Iterator[None]:
    _sync(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        _sync(device)
        timings.add(name, (time.perf_counter() - start) * 1000.0)


@dataclass
class PassCounter:
    """Counts image-encoder passes: `forward` images encoded without grad, `grad` images with grad.

    A pass with grad enabled is counted as one forward + one backward, since every such pass in this
    library is followed by a backward. Counts are in images, so passes per image = count / batch.
    """

    forward: int = 0
    grad: int = 0
    on_pass: "object | None" = None  # optional callable(counter) fired after each encoder call

    @property
    def total(self) -> int:
        return self.forward + self.grad


@dataclass(frozen=True)
class Passes:
    """Encoder passes per image a method needs, for cost estimates made before running it: single-image
    passes (`forward`, `grad` = forward + backward) and passes made in large batches (`batched_*`, e.g.
    the views of test-time adaptation), which cost less per image."""

    forward: float = 0.0
    grad: float = 0.0
    batched_forward: float = 0.0
    batched_grad: float = 0.0

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.forward + other.forward, self.grad + other.grad,
                      self.batched_forward + other.batched_forward, self.batched_grad + other.batched_grad)

    def __mul__(self, k: float) -> "Passes":
        return Passes(self.forward * k, self.grad * k, self.batched_forward * k, self.batched_grad * k)

    __rmul__ = __mul__

    @property
    def total(self) -> float:
        return self.forward + self.grad + self.batched_forward + self.batched_grad


_CURRENT = contextvars.ContextVar("demo_pass_counters", default=[])
_STOP = contextvars.ContextVar("demo_stop_check", default=None)


class RunCancelled(Exception):
    """The caller asked to stop this run (Stop button, cancelled API job, closed page)."""


@contextmanager
def cancellable(should_stop) -> Iterator[None]:
    """Make every encoder pass in this context check `should_stop()` first and raise RunCancelled.

    Every attack step, defense view and counterattack step goes through the encoder, so a stop request
    ends a run within one pass, wherever it is (inside torchattacks' loops too).
    """
    token = _STOP.set(should_stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def check_cancelled() -> None:
    should_stop = _STOP.get()
    if should_stop is not None and should_stop():
        raise RunCancelled("stopped")


@contextmanager
def count_passes(on_pass=None) -> Iterator[PassCounter]:
    """Count encoder passes made in this thread/context; nested counters all see the passes.

    Context variables keep concurrent requests (threads) from seeing each other's counts.
    """
    counter = PassCounter(on_pass=on_pass)
    token = _CURRENT.set(_CURRENT.get() + [counter])
    try:
        yield counter
    finally:
        _CURRENT.reset(token)


def record_pass(n_images: int, with_grad: bool) -> None:
    check_cancelled()
    for c in _CURRENT.get():
        if with_grad:
            c.grad += n_images
        else:
            c.forward += n_images
        if c.on_pass is not None:
            c.on_pass(c)
