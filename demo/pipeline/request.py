"""One request, in library units: what to attack with, which defenses, in which mode, with which seed.

The page builds one from its controls (`demo.ui.parse.request`), `python -m demo.eval` from its command
line (and the sweep through it); `run_request` runs it. The attack inside is an `AttackSpec`, built into
an attack by `demo.attacks._spec.build_attack` wherever it runs, so the same settings give the same attack.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import torch

from ..attacks import AttackSpec
from .compare import run_comparison
from .curve import robustness_curve
from .inputs import InputError

OBLIVIOUS, ADAPTIVE = "oblivious", "adaptive"
MODES = (OBLIVIOUS, ADAPTIVE)


@dataclass(frozen=True)
class Request:
    """attack: the attack's spec (pixel units; no `alpha` means the step follows the budget).
    defenses: {paradigm: (defense name, parameters in pixel units)}, or None for the attack alone.
    mode: "oblivious" (one attack on the undefended model) or "adaptive" (one through each defense).
    seed: every random draw of the request comes from generators seeded with it.
    model: the zoo key asked for. true_label, target: label indices, or None (the clean prediction;
    untargeted)."""

    attack: AttackSpec = field(default_factory=AttackSpec)
    defenses: Mapping[str, tuple[str, dict]] | None = None
    mode: str = OBLIVIOUS
    seed: int = 0
    model: str = "teaching"
    true_label: int | None = None
    target: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"The attack mode must be {OBLIVIOUS!r} or {ADAPTIVE!r}, got {self.mode!r}.")

    @property
    def adaptive(self) -> bool:
        return self.mode == ADAPTIVE

    def replace(self, **changes) -> "Request":
        return replace(self, **changes)


def run_request(loaded, image: torch.Tensor, labels: list[str], request: Request, progress=None, on_column=None):
    """`run_comparison` for a request."""
    return run_comparison(loaded, image, labels, request.true_label, request.attack.name, dict(request.attack.params),
                          request.target, request.defenses, request.adaptive, request.seed, progress, on_column)


def curve_request(loaded, image: torch.Tensor, labels: list[str], request: Request, eps_values, progress=None):
    """`robustness_curve` for a request: its attack at each budget of `eps_values` (pixel units)."""
    return robustness_curve(loaded, image, labels, request.true_label, request.attack.name, dict(request.attack.params),
                            eps_values, request.defenses, request.adaptive, request.target, request.seed, progress)
