"""The attack interface: stateless configurations run on a model passed per call.

Images are float tensors in [0,1], NCHW; eps and step sizes are floats in pixel units. The returned
adversarial image is quantized to the uint8 grid (what a user can download as PNG), still inside the
budget, and all reported predictions are computed on that quantized image.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn as nn

from ..timing import PassCounter, Timings, count_passes, timer


class AttackError(ValueError):
    """The attack cannot run with these inputs (e.g. too few labels for DLR, missing target)."""


def param(default, *, lo=None, hi=None, step=None, label: str = "", help: str = "", unit: str = "", auto: str = ""):
    """A dataclass field carrying UI metadata (range, label, unit "/255" for pixel budgets). `auto` says
    how the value is derived when it is not given (the step that follows the budget); a control shows 0
    for "not given"."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "step": step, "label": label, "help": help, "unit": unit,
                                            "auto": auto})


def to_levels(images: torch.Tensor) -> torch.Tensor:
    """Images in [0,1] -> their 8-bit levels (uint8), as a PNG stores them. The one rounding to 8 bits."""
    return torch.round(images.clamp(0, 1) * 255.0).to(torch.uint8)


def from_levels(levels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """8-bit levels -> float images in [0,1] (k/255)."""
    return levels.to(dtype) / 255.0


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to the uint8 grid (k/255), as when the image is saved as PNG."""
    return from_levels(to_levels(images), images.dtype)


DISPLAY_SCALE = {"/255": 255.0}


def display_scale(f) -> float:
    """How much larger a field's value reads than it is held: 255 for a budget shown in /255."""
    return DISPLAY_SCALE.get(f.metadata.get("unit", ""), 1.0)


def is_number(value) -> bool:
    """A plain or numpy scalar number (a bool is a flag, not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) or _numpy_number(value)


def _numpy_number(value) -> bool:
    kind = getattr(getattr(value, "dtype", None), "kind", "")
    return kind in ("i", "u", "f") and getattr(value, "ndim", 1) == 0


def show(value: float, f) -> str:
    """One value in the unit a person reads: '4/255' for a pixel budget, '0.5' for an L2 radius."""
    unit = f.metadata.get("unit", "")
    return f"{float(value) * display_scale(f):g}{unit}"


def check_values(owner: str, fields, params: Mapping[str, object], error: type[Exception] = AttackError) -> None:
    """Every given value against its field: true/false for flags, a finite number inside the declared
    range for numbers, a whole number for counts. Raises `error` with a message meant for the user."""
    for f in fields:
        if f.name not in params:
            continue
        value, meta = params[f.name], f.metadata
        what = meta.get("label") or f.name
        if isinstance(f.default, bool):
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                # A string "false" is truthy: taking it as given would silently mean the opposite.
                raise error(f"{owner}: {what} must be true or false, got {value!r}.")
            continue
        if not isinstance(f.default, (int, float)):
            continue
        if not is_number(value) or not math.isfinite(float(value)):
            raise error(f"{owner}: {what} must be a number, got {value!r}.")
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo - 1e-9) or (hi is not None and value > hi + 1e-9):
            raise error(f"{owner}: {what} = {show(value, f)} is out of range: it must lie between "
                        f"{show(lo, f) if lo is not None else '-inf'} and {show(hi, f) if hi is not None else 'inf'}.")
        if isinstance(f.default, int) and float(value) != int(value):
            raise error(f"{owner}: {what} must be a whole number, got {value!r}.")


STEP_RULE = "2.5 x eps / steps"  # how the step is derived when none is given


def step_for_budget(eps: float, steps: int) -> float:
    """The step size that scales with the budget: 2.5 * eps / steps (Madry et al., ICLR 2018), so that
    `steps` steps can cross the eps-ball and back. 4/255 in 10 steps gives 1/255."""
    return 2.5 * float(eps) / max(int(steps), 1)


def project(adv: torch.Tensor, clean: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project `adv` onto the eps-ball around `clean` (L-inf or L2) and into [0,1]."""
    delta = adv - clean
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "l2":
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * torch.clamp(eps / n, max=1.0)
    return (clean + delta).clamp(0, 1)


def quantize_in_budget(adv: torch.Tensor, clean: torch.Tensor, eps: float | None, norm: str) -> torch.Tensor:
    """Quantize to uint8 while staying inside the budget.

    Clean images from uploads already lie on the uint8 grid. For L-inf each pixel's perturbation goes to
    the nearest 8-bit level, capped at the largest level inside the budget: rounding towards zero instead
    would drop every pixel between two levels by a whole one and weaken every attack a little. For L2
    the rounded delta can grow by half a level per pixel, so it is scaled down until it fits.
    """
    q_clean = quantize(clean)
    delta = adv - q_clean
    if norm == "linf":
        levels = torch.round(delta * 255.0)
        if eps is not None:
            # Float error puts a boundary pixel at 3.9999998/255 for a 4/255 budget: it counts as on it.
            cap = float(int(eps * 255.0 + 1e-4))
            levels = levels.clamp(-cap, cap)
        q = q_clean + levels / 255.0
    else:
        q = quantize(adv)
    q = q.clamp(0, 1)
    if eps is not None and norm == "l2":
        over = (q - q_clean).flatten(1).norm(dim=1) > eps + 1e-6
        if bool(over.any()):
            # Rounding adds noise of norm ~sqrt(pixels/12)/255 whatever the scale (0.25 at 128 px), so
            # shrinking the rounded delta does not converge. Bisect the scale of the continuous delta
            # instead; scale 0 (the clean image) always fits, so the result always does.
            base, d = q_clean[over], delta[over]
            lo = torch.zeros(d.shape[0], 1, 1, 1, device=d.device, dtype=d.dtype)
            hi = torch.ones_like(lo)
            for _ in range(20):
                mid = (lo + hi) / 2
                fits = (quantize(base + d * mid) - base).flatten(1).norm(dim=1).view(-1, 1, 1, 1) <= eps + 1e-6
                lo, hi = torch.where(fits, mid, lo), torch.where(fits, hi, mid)
            q[over] = quantize(base + d * lo)
    return q


@dataclass
class AttackResult:
    """What an attack returns (all tensors detached, on the input's device).

    adv_images: the uint8-quantized adversarial images in [0,1].
    delta: adv_images - images.
    history: per-step records (e.g. {"step": i, "loss": ...}) for plots.
    timings: milliseconds per stage ("attack").
    passes: encoder passes per image, {"forward": f, "grad": g} (a grad pass = forward + backward).
    meta: attack-specific facts (norms, success, target) for display.
    """

    adv_images: torch.Tensor
    delta: torch.Tensor
    history: list[dict] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    passes: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def linf(self) -> torch.Tensor:
        return self.delta.flatten(1).abs().amax(1)

    @property
    def l2(self) -> torch.Tensor:
        return self.delta.flatten(1).norm(dim=1)


ProgressFn = Callable[[float, str], None]


@dataclass
class Attack(abc.ABC):
    """Base class: subclasses are dataclasses whose fields are hyperparameters (see `param`).

    Subclasses set the class attributes and implement `perturb`. `__call__` validates inputs,
    counts passes, times the run, quantizes and packages the result.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    norm: ClassVar[str] = "linf"  # "linf" | "l2"
    supports_targeted: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = True
    min_classes: ClassVar[int] = 2
    min_classes_why: ClassVar[str] = ""  # said when there are too few labels (why the loss needs them)
    reference: ClassVar[str] = ""

    def model_calls(self) -> int:
        """How many times a run calls the model (each a forward and backward pass), for cost estimates."""
        return int(getattr(self, "steps", 1) or 1)

    @property
    def budget(self) -> float | None:
        """The norm bound the result must respect (None when the attack has no hard bound)."""
        return getattr(self, "eps", None)

    @classmethod
    def params(cls) -> list:
        return [f for f in fields(cls) if f.init]

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        target: torch.Tensor | None = None,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> AttackResult:
        self.check(model, images, labels, target)
        images = quantize(images.detach())  # images are 8-bit; the budget is measured from the 8-bit clean image
        timings = Timings()
        generator = torch.Generator(device=images.device).manual_seed(int(seed))
        # Evaluation mode for the run, and every submodule's own flag restored afterwards: a wrapper built
        # in training mode (the nn.Module default) must not leave the shared, frozen CLIP's BatchNorm on
        # batch statistics. Flags are read and written directly, and only where they differ: `eval()` and
        # `modules()` walk a CLIP's submodules through slow generic code: 1-3 ms per call, up to a tenth
        # of a forward and backward pass of the teaching model.
        modes = [(m, m.training) for m in _submodules(model)]
        for m, training in modes:
            if training:
                m.training = False
        try:
            with count_passes() as counter, timer("attack", timings, images.device):
                with torch.enable_grad():
                    adv, history = self.perturb(model, images.detach(), labels, target, generator, progress)
                adv = quantize_in_budget(adv.detach(), images.detach(), self.budget, self.norm)
        finally:
            for m, training in modes:
                if m.training != training:
                    m.training = training
        n = images.shape[0]
        return AttackResult(adv, adv - images.detach(), history, timings, _per_image(counter, n), {"norm": self.norm})

    def check(self, model, images, labels, target) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise AttackError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if float(images.min()) < 0 or float(images.max()) > 1:
            raise AttackError("images must be in [0, 1]")
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and num_classes < self.min_classes:
            if self.min_classes_why:
                raise AttackError(f"{self.title or self.name} needs >= {self.min_classes} labels: {self.min_classes_why}, "
                                  f"and there are only {num_classes} labels. Add labels or use APGD-CE.")
            raise AttackError(f"{self.title or self.name} needs at least {self.min_classes} labels, got {num_classes}")
        if self.needs_labels and labels is None:
            raise AttackError(f"{self.title or self.name} needs labels")
        if target is not None and not self.supports_targeted:
            raise AttackError(f"{self.title or self.name} has no targeted mode")
        fields = self.params()
        check_values(self.title or self.name, fields, {f.name: getattr(self, f.name) for f in fields})

    @abc.abstractmethod
    def perturb(self, model, images, labels, target, generator, progress) -> tuple[torch.Tensor, list[dict]]:
        """Return (adversarial images in [0,1] inside the budget, per-step history)."""


def _submodules(model: nn.Module) -> list[nn.Module]:
    """`model` and all its submodules, each once (what `model.modules()` yields, without the names)."""
    seen, stack, out = set(), [model], []
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        stack.extend(c for c in m._modules.values() if c is not None)
    return out


def _per_image(counter: PassCounter, n: int) -> dict[str, float]:
    return {"forward": counter.forward / max(n, 1), "grad": counter.grad / max(n, 1)}
