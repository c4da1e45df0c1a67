"""Glue between the `Attack` interface and torchattacks 3.5.1 (shared by the label-based attacks).

torchattacks objects are stateful (mode, targeted flag, model), so one is built per call and thrown
away: two requests never share one. The classifier already normalizes inside, so
`set_normalization_used` is never called and torchattacks sees [0,1] images in and out.

torchattacks draws random starts from torch's global generator, which every thread shares (a model
being built in another thread draws its weights from it). So the run goes through `local_rng`: in this
thread, those draws come from generators seeded from the attack's local generator instead, and the same
seed gives the same result whatever else the process does. APGD also reseeds the global generator itself;
`fork_rng` puts it back afterwards, so the caller's random stream is left as it was.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.rng import local_rng, model_call
from .base import Attack, AttackError, ProgressFn

# When set to a list (see `record_frames`), every gradient call of the attack appends its input: the
# image at the start of each step, for the step-by-step view. Per context, so requests never mix.
FRAMES: contextvars.ContextVar[list | None] = contextvars.ContextVar("attack_frames", default=None)


@contextlib.contextmanager
def record_frames():
    """Collect the attack's input images, one per gradient step (detached, on the CPU)."""
    frames: list = []
    token = FRAMES.set(frames)
    try:
        yield frames
    finally:
        FRAMES.reset(token)


class _Counting(nn.Module):
    """images -> logits of `model`, recording one history entry per model call and reporting progress.

    torchattacks has no step hook; every attack step calls the model once, so calls are steps.
    """

    def __init__(self, model: nn.Module, labels: torch.Tensor, targeted: bool, expected_calls: int,
                 progress: ProgressFn | None, min_classes: int, device: torch.device):
        super().__init__()
        # Registered first so that torchattacks, which reads the device from the first parameter,
        # finds the images' device even when the wrapped model has no parameters of its own.
        self._device_anchor = nn.Parameter(torch.zeros(0, device=device), requires_grad=False)
        self.model = model
        self.labels, self.targeted = labels, targeted
        self.expected, self.progress, self.min_classes = max(expected_calls, 1), progress, min_classes
        self.calls = 0
        self._calls: list[tuple[bool, torch.Tensor]] = []  # (with gradient, detached logits) per call

    def train(self, mode: bool = True) -> "_Counting":
        # `Attack.__call__` has already put the whole model in eval mode and restores each flag after
        # the call. torchattacks calls eval() again on every run, which would walk every submodule of
        # the CLIP (text tower included) for nothing, so the switch stops at this wrapper.
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with model_call():
            logits = self.model(images)
        if logits.ndim != 2 or logits.shape[1] < self.min_classes:
            raise AttackError(f"the model returned logits of shape {tuple(logits.shape)}; "
                              f"this attack needs at least {self.min_classes} classes")
        # Only the logits are kept here; the loss and success of each step are computed once, after the
        # attack, so the per-step cost of the history stays out of the attack loop.
        self._calls.append((bool(images.requires_grad), logits.detach()))
        frames = FRAMES.get()
        if frames is not None and images.requires_grad:
            frames.append(images.detach().cpu())
        self.calls += 1
        if self.progress is not None:
            self.progress(min(self.calls / self.expected, 1.0), f"step {min(self.calls, self.expected)}/{self.expected}")
        return logits

    @torch.no_grad()
    def history(self) -> list[dict]:
        """One entry per model call: step, whether it had a gradient, batch size, and where the call's
        labels are known, "loss" (cross-entropy towards the true label, or the target if targeted) and
        "success" (fraction of images already fooled, or already at the target)."""
        entries, active = [], None  # active: labels of the subset APGD attacks after its first call
        for step, (grad, logits) in enumerate(self._calls):
            entry: dict = {"step": step, "grad": grad, "n_images": int(logits.shape[0])}
            y = None
            if logits.shape[0] == self.labels.shape[0]:
                y = self.labels
            elif active is not None and logits.shape[0] == active.shape[0]:
                y = active
            if y is not None:
                pred = logits.argmax(1)
                entry["loss"] = float(F.cross_entropy(logits.float(), y))
                entry["success"] = float((pred == y).float().mean() if self.targeted else (pred != y).float().mean())
                if step == 0 and not self.targeted and logits.shape[0] == self.labels.shape[0]:
                    active = self.labels[pred == self.labels]
            entries.append(entry)
        return entries


def check_labels(name: str, labels: torch.Tensor, n: int, num_classes: int | None, what: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise AttackError(f"{name}: {what} must have shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise AttackError(f"{name}: {what} must be integer class indices")
    if num_classes is not None and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise AttackError(f"{name}: {what} must be class indices in [0, {num_classes - 1}]")
    return labels.long()


def derive_seed(generator: torch.Generator) -> int:
    """An integer seed drawn from the attack's local generator (the seed of torchattacks' draws)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def run_torchattacks(
    build: Callable[[object, nn.Module, int], object],
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: torch.Tensor | None,
    generator: torch.Generator,
    progress: ProgressFn | None,
    *,
    name: str,
    expected_calls: int,
    min_classes: int = 2,
    random: bool = True,
) -> tuple[torch.Tensor, list[dict]]:
    """Run one fresh torchattacks attack. `build(torchattacks, wrapped_model, seed)` returns it.

    Untargeted attacks get the true labels; targeted ones get the target labels in torchattacks'
    "targeted by label" mode. `random=False` (an attack that draws no random numbers, e.g. FGSM) skips
    the local generators. Returns (adversarial images in
    [0,1], per-call history).
    """
    import torchattacks  # imported here: it loads every attack and SciPy, which costs seconds at startup

    n, device = images.shape[0], images.device
    num_classes = getattr(model, "num_classes", None)
    labels = check_labels(name, labels, n, num_classes).to(device)
    if target is not None:
        target = check_labels(name, target, n, num_classes, "target").to(device)
    wrapped = _Counting(model, target if target is not None else labels, target is not None,
                        expected_calls, progress, min_classes, device).eval()
    seed = derive_seed(generator)
    if not random:
        return _run(torchattacks, build, wrapped, seed, images, labels, target, num_classes, device, progress)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), local_rng(seed):
        return _run(torchattacks, build, wrapped, seed, images, labels, target, num_classes, device, progress)


def _run(ta, build, wrapped, seed, images, labels, target, num_classes, device, progress):
    atk = build(ta, wrapped, seed)
    atk.set_device(device)
    if hasattr(atk, "n_classes") and num_classes is not None:
        atk.n_classes = num_classes
    if target is not None:
        atk.set_mode_targeted_by_label(quiet=True)
        adv = atk(images, target)
    else:
        adv = atk(images, labels)
    if progress is not None:
        progress(1.0, "done")
    return adv.detach().clamp(0, 1), wrapped.history()


class TorchAttack(Attack):
    """An `Attack` run by torchattacks: subclasses implement `build` and `expected_calls`."""

    def build(self, ta, model: nn.Module, seed: int):
        raise NotImplementedError

    def expected_calls(self) -> int:
        return getattr(self, "steps", 1)

    def model_calls(self) -> int:
        return int(self.expected_calls())

    def draws_random(self) -> bool:
        """Whether torchattacks draws random numbers in this attack (then it draws them from local generators):
        an attack with a `random_start` switch draws only when it is on."""
        return bool(getattr(self, "random_start", True))

    def perturb(self, model, images, labels, target, generator, progress):
        return run_torchattacks(self.build, model, images, labels, target, generator, progress,
                                name=self.title or self.name, expected_calls=self.expected_calls(),
                                min_classes=self.min_classes, random=self.draws_random())
