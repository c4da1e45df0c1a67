"""The three paradigms stacked in one pipeline: robust weights, test-time adaptation and an input transform.

The image first goes through the training-free transform (e.g. JPEG), then the test-time adaptation
(e.g. R-TPT) runs on the classifier whose image tower is the training-time defense's robust twin
(e.g. TeCoA's). Each part is the registered defense, used with its own defaults and paper references
(Mao et al. 2023 for TeCoA, Sheng et al. 2025 for R-TPT, Guo et al. 2018 for JPEG, ...); the stack adds
nothing but the order. Its adaptive path chains each part's own: the robust tower differentiated
exactly, the adaptation's BPDA/EOT path, the transform's BPDA (or exact gradient) and EOT, so one attack
goes through the whole pipeline (Athalye, Carlini & Wagner, ICML 2018, on attacking composed defenses).

Only robust image towers can be the training-time part: a learned prompt (APT, FAP) would be replaced
by the test-time adaptation's own prompt. Only input transforms can be the training-free part: the
embedding- and counterattack-based ones (CLIPure, TTC, Anti-adversary) classify through the base model
themselves, so they do not compose with an adapted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ..registry import DEFENSES, UnknownNameError
from ..timing import Passes, Timings
from .base import Defense, DefenseError, DefenseModule, DefenseOutput, Paradigm, label_names, param
from .training_free.input_transform import InputTransformDefense, local_generator
from .training_time.twin import RobustTwinDefense

PREFIX = "stack:"
# What each slot accepts.
SLOTS = {"training_time": lambda c: issubclass(c, RobustTwinDefense),
         "test_time": lambda c: c.paradigm == Paradigm.TEST_TIME,
         "training_free": lambda c: issubclass(c, InputTransformDefense)}


def allowed(slot: str) -> list[str]:
    """The registered defenses that can fill `slot` ("none" leaves it empty)."""
    return ["none"] + DEFENSES.names(SLOTS[slot])


class _StackModule(DefenseModule):
    """The stack's adaptive path: its parts' own paths, chained (`Stack.chain`)."""

    def __init__(self, defense: "Stack", clf: nn.Module, seed: int = 0):
        super().__init__(defense, clf, seed)
        self.chain = defense.chain(clf, seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.chain(images)


@DEFENSES.register("stack")
@dataclass
class Stack(Defense):
    """A training-time, a test-time and a training-free defense applied together (defaults: the page's
    default defenses, TeCoA + R-TPT + JPEG, which are also the strongest robust tower, test-time and
    training-free rows of the leaderboard that stack). Parameters name the parts; "none" leaves one out."""

    title = "All three together (stacked)"
    module: ClassVar[type[DefenseModule]] = _StackModule
    paradigm = Paradigm.STACKED
    differentiable = False   # the default stack's JPEG step is crossed by BPDA
    randomized = True        # the default stack's R-TPT draws views
    reference = ("Each part's own paper; composed defenses attacked adaptively as in Athalye, Carlini & Wagner, "
                 "Obfuscated Gradients Give a False Sense of Security, ICML 2018, arXiv 1802.00420")
    deviation = ("The parts run with their own defaults and deviations; the adaptive attack chains each part's "
                 "adaptive path (so the adaptation is crossed by BPDA, as for R-TPT alone).")
    parts_order: ClassVar[tuple[str, ...]] = ("training_time", "test_time", "training_free")

    training_time: str = param("tecoa", label="Training-time part (robust image tower)",
                               help="a defense with a robust image tower (the training-time list), or none.")
    test_time: str = param("rtpt", label="Test-time part (adaptation)", help="tpt, rtpt or tapt, or none.")
    training_free: str = param("jpeg", label="Training-free part (input transform)",
                               help="jpeg, bit_depth, median or random_resize_pad, or none.")
    eot_draws: int = param(0, lo=0, hi=16, step=1, label="EOT draws of the randomized parts (adaptive attack)",
                           help="0 keeps each part's own number of draws.")

    def __post_init__(self):
        parts = self.parts()
        # Facts of this stack, not of the class default: an instance attribute shadows the class value.
        self.randomized = any(p.randomized for p in parts.values() if p is not None)
        self.differentiable = all(p.differentiable for p in parts.values() if p is not None)
        names = [p.title.split(" (")[0] for p in parts.values() if p is not None]
        self.title = "Stacked: " + (" + ".join(names) if names else "nothing")

    def parts(self) -> dict[str, Defense | None]:
        """The three parts as defense objects (None for an empty slot); DefenseError for a part that
        does not exist or cannot fill its slot."""
        out = {}
        for slot in self.parts_order:
            name = str(getattr(self, slot)).strip()
            if name == "none":
                out[slot] = None
                continue
            try:
                cls = DEFENSES.get(name)
            except UnknownNameError:
                cls = None
            if cls is None or not SLOTS[slot](cls):
                raise DefenseError(f"{name!r} cannot be the {slot.replace('_', '-')} part of a stack; "
                                   f"choose one of: {', '.join(allowed(slot))}")
            fields = {f.name for f in cls.params()}
            out[slot] = cls(eot_draws=self.eot_draws) if self.eot_draws and "eot_draws" in fields else cls()
        return out

    @property
    def spec(self) -> str:
        """The name `demo.eval --defenses` knows this stack by (see `from_spec`)."""
        return PREFIX + "+".join(str(getattr(self, s)) for s in self.parts_order)

    def robust(self, clf: nn.Module) -> nn.Module:
        """The classifier with the training-time part's image tower (the shared one when the slot is empty)."""
        tt = self.parts()["training_time"]
        return clf if tt is None else tt.classifier(clf)

    def predict(self, clf, images, seed):
        parts = self.parts()
        for p in parts.values():
            if p is not None:
                p.check()
        robust, timings = self.robust(clf), Timings()
        free, adapt = parts["training_free"], parts["test_time"]
        seen = images if free is None else free.transform(images, local_generator(seed)).clamp(0, 1)
        if adapt is None:
            logits, adapted = robust(seen), {}
        else:
            out = adapt.predict(robust, seen, seed)
            logits, adapted = out.logits, out.changed
            timings.merge(out.timings)
        changed = {"parts": {s: getattr(self, s) for s in self.parts_order}, "test-time": adapted}
        if parts["training_time"] is not None:
            changed["image tower"] = parts["training_time"].name
        if free is not None:
            changed["training-free"] = free.changed(images, seen)
        summary = [f"{self.title}: the image went through {free.title if free else 'no transform'}, then "
                   f"{adapt.title.split(' (')[0] if adapt else 'no adaptation'} on "
                   f"{'the ' + parts['training_time'].title.split(' (')[0] + ' image tower' if parts['training_time'] else 'the original image tower'}; "
                   f"it says {name!r}." for name in label_names(clf, logits.argmax(-1))]
        return DefenseOutput(logits=logits, images=seen if free is not None else None, changed=changed,
                             summary=summary, timings=timings)

    def chain(self, clf, seed: int = 0) -> nn.Module:
        """Each part's adaptive path, chained: transform (BPDA/exact, EOT) -> adaptation (BPDA through the
        tuning, EOT across steps) -> robust tower (exact gradients)."""
        parts = self.parts()
        module = self.robust(clf)
        if parts["test_time"] is not None:
            module = parts["test_time"].as_module(module, seed)
        if parts["training_free"] is not None:
            module = parts["training_free"].as_module(module, seed)
        return module

    def predict_passes(self) -> Passes:
        adapt = self.parts()["test_time"]
        return adapt.predict_passes() if adapt is not None else Passes(forward=1)

    def adaptive_passes(self) -> Passes:
        parts = self.parts()
        inner = parts["test_time"].adaptive_passes() if parts["test_time"] is not None else Passes(grad=1)
        free = parts["training_free"]
        return (free.draws if free is not None else 1) * inner


def from_spec(name: str, eot: int | None = None) -> Stack:
    """"stack" or "stack:TRAINING_TIME+TEST_TIME+TRAINING_FREE" (e.g. "stack:fare+tpt+median", "none"
    for an empty slot) -> the stack; DefenseError for a malformed name or an unfit part."""
    extra = {"eot_draws": int(eot)} if eot else {}
    if name == "stack":
        return Stack(**extra)
    if not name.startswith(PREFIX) or len(name[len(PREFIX):].split("+")) != 3:
        raise DefenseError(f"a stack is written {PREFIX}TRAINING_TIME+TEST_TIME+TRAINING_FREE (e.g. "
                           f"{PREFIX}tecoa+rtpt+jpeg), got {name!r}")
    return Stack(**dict(zip(Stack.parts_order, (p.strip() for p in name[len(PREFIX):].split("+")))), **extra)
