"""One defense interface for the three paradigms (training-time, test-time adaptation, training-free).

A defense is a stateless configuration (a dataclass of hyperparameters). Per call it gets the shared,
frozen `ZeroShotClassifier` and a batch of images in [0,1]. It must never mutate shared state: the
classifier's parameters are byte-identical after any call, and test-time adaptation works on cloned
parameters (episodic). Randomized defenses draw from a local generator seeded per call.

- `predict(clf, images, seed)` -> `DefenseOutput` (logits, the images or embeddings actually classified,
  what changed, timings, passes per image).
- `as_module(clf, seed)` -> an `nn.Module` images -> logits through the defense, differentiable for
  adaptive attacks: BPDA (identity backward) for non-differentiable steps, EOT (averaged logits over
  random draws) for randomized ones. Each adaptive path is a `DefenseModule` subclass named by the
  defense's `module` class attribute.

The class attributes are the one record of each method's facts (its paradigm, whether it is randomized,
its adaptive path, the trained weights it needs and the command that trains them). The model zoo's
robust twins, the training command line, the benchmark's stand-ins and the evaluation suite's rows are
all read from them through `DEFENSES`, so a new method is its own file plus its registration line.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import ClassVar

import torch
import torch.nn as nn

from ..attacks.base import param  # noqa: F401  (re-exported: defenses declare hyperparameters the same way)
from ..timing import Passes, Timings, count_passes, timer


class Paradigm(str, Enum):
    TRAINING_TIME = "training-time"
    TEST_TIME = "test-time"
    TRAINING_FREE = "training-free"
    STACKED = "stacked"  # one of each of the three, in one pipeline (demo/defenses/stack.py)


class Weights(str, Enum):
    """Trained weights a defense needs besides the base model (files in the teaching models' folders)."""

    NONE = ""
    IMAGE_TOWER = "image tower"   # a robust twin: `visual_<name>.safetensors`, the text tower is the base's
    PROMPTS = "prompts"           # learned prompts (and statistics) used with the base model's towers
    CALIBRATION = "calibration"   # a threshold measured on clean images


class DefenseError(ValueError):
    """The defense cannot run (bad parameter, missing robust weights, unsupported model)."""


@dataclass
class DefenseOutput:
    """logits (N, C); images: what was classified when the defense changes the input (else None);
    features: the embedding classified when the defense changes the embedding (else None);
    changed: raw facts for the JSON download (e.g. {"tau": [...], "adapted": True}); summary: per image,
    one plain-language sentence of what the defense did, in label names; timings in ms; passes per image."""

    logits: torch.Tensor
    images: torch.Tensor | None = None
    features: torch.Tensor | None = None
    changed: dict = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    passes: dict[str, float] = field(default_factory=dict)


def label_names(clf: nn.Module, indices) -> list[str]:
    """Class indices -> the classifier's label names (for plain-language summaries)."""
    names = getattr(clf, "classnames", None) or []
    return [names[int(i)] if 0 <= int(i) < len(names) else f"class {int(i)}" for i in indices]


def pixel_change(before: torch.Tensor, after: torch.Tensor) -> list[float]:
    """Per image, the largest change of any pixel and channel, in /255."""
    return [255.0 * float(v) for v in (after - before).flatten(1).abs().amax(1)]


class BPDAWrapper(torch.autograd.Function):
    """Forward: a non-differentiable transform's output; backward: identity (Athalye et al., 2018)."""

    @staticmethod
    def forward(ctx, x, transformed):
        return transformed

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def bpda(x: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """`transformed` in the forward pass, gradient of the identity w.r.t. `x` in the backward pass."""
    return BPDAWrapper.apply(x, transformed.detach())


def local_generator(seed: int) -> torch.Generator:
    # A CPU generator gives the same draws on every device, so a seed means the same thing on a laptop
    # and on a GPU Space.
    return torch.Generator(device="cpu").manual_seed(int(seed))


class DefenseModule(nn.Module):
    """Base of the adaptive paths (`Defense.as_module`): images -> logits through `defense` on `clf`.
    `num_classes` is the classifier's, for attacks that need the class count (APGD-T, AutoAttack).
    `generator` is seeded once and advances with every call, so each attack step sees fresh random
    draws while a whole attack run stays reproducible."""

    def __init__(self, defense: Defense, clf: nn.Module, seed: int = 0):
        super().__init__()
        self.defense, self.clf, self.seed = defense, clf, int(seed)
        self.num_classes = getattr(clf, "num_classes", None)
        self.generator = local_generator(self.seed)


class _PredictModule(DefenseModule):
    """Adaptive path by BPDA through the whole defense: forward = the defense's logits, backward =
    the gradient of the undefended classifier at the defended input (identity for the defense)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.defense.predict(self.clf, images.detach(), self.seed)
        seen = out.images if out.images is not None else images.detach()
        surrogate = self.clf(bpda(images, seen) if out.images is not None else images)
        # Value of the defense, gradient of the surrogate.
        return surrogate + (out.logits - surrogate).detach()


@dataclass
class Defense(abc.ABC):
    """Base class. Subclasses set the class attributes and implement `predict`; they set `module` to
    their own `DefenseModule` when the default adaptive path (the defense's own forward through
    `predict` with BPDA) is not right."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paradigm: ClassVar[Paradigm] = Paradigm.TRAINING_FREE
    differentiable: ClassVar[bool] = True   # False -> adaptive attacks use BPDA
    randomized: ClassVar[bool] = False      # True -> adaptive attacks use EOT
    reference: ClassVar[str] = ""
    deviation: ClassVar[str] = ""           # where this implementation departs from the paper, said in the UI
    trained_weights: ClassVar[Weights] = Weights.NONE
    trained_by: ClassVar[str] = ""          # the command that trains `trained_weights` for a teaching model
    needs_vit: ClassVar[bool] = False       # prompts inside the image tower's blocks: ViT towers only
    module: ClassVar[type[DefenseModule]] = _PredictModule  # the adaptive path (see `as_module`)

    @classmethod
    def method(cls) -> str:
        """The method's short name, e.g. "PMG-AFT" (the title up to its parenthesis)."""
        return (cls.title or cls.name).split(" (")[0]

    @classmethod
    def params(cls) -> list:
        return [f for f in fields(cls) if f.init]

    def check(self) -> None:
        for f in self.params():
            lo, hi, v = f.metadata.get("lo"), f.metadata.get("hi"), getattr(self, f.name)
            if lo is not None and v < lo or hi is not None and v > hi:
                raise DefenseError(f"{self.title or self.name}: {f.name}={v} is outside [{lo}, {hi}]")

    def __call__(self, clf: nn.Module, images: torch.Tensor, seed: int = 0) -> DefenseOutput:
        """Validate, count passes, time and run `predict` (no gradients unless the defense enables them)."""
        self.check()
        with count_passes() as counter:
            timings = Timings()
            with timer("defense", timings, images.device), torch.no_grad():
                out = self.predict(clf, images.detach(), seed)
        out.timings.merge(timings)
        n = max(images.shape[0], 1)
        out.passes = {"forward": counter.forward / n, "grad": counter.grad / n}
        return out

    @abc.abstractmethod
    def predict(self, clf: nn.Module, images: torch.Tensor, seed: int) -> DefenseOutput:
        """Classify `images` through the defense. Runs under no_grad; use torch.enable_grad() inside
        where the method itself needs gradients (counterattacks, prompt tuning)."""

    def as_module(self, clf: nn.Module, seed: int = 0) -> nn.Module:
        """The defended model for adaptive attacks (images -> logits, gradients reach the input)."""
        self.check()
        return self.module(self, clf, seed)

    def adaptive_variants(self) -> dict[str, "Defense"]:
        """Further adaptive attacks an evaluation should also run, by name: defenses configured to give
        another attack path (e.g. one that also targets a detector). Each is scored through `self`."""
        return {}

    def predict_passes(self) -> Passes:
        """Encoder passes per image of one `predict`, for cost estimates made before running."""
        return Passes(forward=1)

    def adaptive_passes(self) -> Passes:
        """Encoder passes per image of one call of `as_module` (one step of an adaptive attack)."""
        return Passes(grad=1)


@dataclass
class ClassifierDefense(Defense):
    """A defense that is another classifier, fixed beforehand (robust weights, learned prompts): it predicts
    in one ordinary pass, and attacking it adaptively means attacking that classifier, so `as_module` is
    the classifier itself, exactly."""

    paradigm: ClassVar[Paradigm] = Paradigm.TRAINING_TIME

    @abc.abstractmethod
    def classifier(self, clf: nn.Module) -> nn.Module:
        """The defended classifier (images -> logits), built from `clf` and the defense's weights."""

    @abc.abstractmethod
    def explain(self, clf: nn.Module) -> tuple[str, dict]:
        """What it classifies with, in words for the summary, and the facts for the JSON download."""

    def predict(self, clf, images, seed):
        logits = self.classifier(clf)(images)
        how, changed = self.explain(clf)
        summary = [f"Classified with {how}; one ordinary pass, and it says {name!r}."
                   for name in label_names(clf, logits.argmax(-1))]
        return DefenseOutput(logits=logits, changed=changed, summary=summary)

    def as_module(self, clf: nn.Module, seed: int = 0) -> nn.Module:
        return self.classifier(clf)
