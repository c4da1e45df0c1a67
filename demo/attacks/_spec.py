"""What an attack is, in library units, and the one way it becomes an `Attack`.

The page, the robustness curve, the lesson scenes, `python -m demo.eval` and the sweep all describe an
attack as an `AttackSpec` and build it with `build_attack`, so the same settings run the same attack
everywhere. This module owns the three rules they would otherwise each write down:

- units: parameters marked unit "/255" are shown and typed in /255 and held in pixel units
  (`to_pixels` / `to_display`; images in [0,1]);
- ranges: every value is checked against its field's declared range (`check_values`);
- the step size: an attack with a step (`alpha`) whose budget or step count is set but whose step is not
  steps 2.5 * eps / steps (`step_for_budget`), so ten steps can cross the eps-ball and back at every eps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..registry import ATTACKS
from .base import Attack, AttackError, check_values, display_scale, is_number, step_for_budget


def to_pixels(cls, values: Mapping[str, object]) -> dict:
    """Values as shown on the page or typed on the command line -> library units: a number for a field
    shown in /255 is divided by 255; everything else passes as it is."""
    fields = {f.name: f for f in cls.params()}
    return {k: (float(v) / display_scale(fields[k]) if k in fields and is_number(v) and display_scale(fields[k]) != 1.0
                else v) for k, v in values.items()}


def to_display(cls, values: Mapping[str, object]) -> dict:
    """Library units -> the units a person reads (4/255 -> 4), rounded to hide float noise."""
    fields = {f.name: f for f in cls.params()}
    return {k: (round(float(v) * display_scale(fields[k]), 6) if k in fields and is_number(v) and display_scale(fields[k]) != 1.0
                else v) for k, v in values.items()}


def follow_budget(cls, params: Mapping[str, object]) -> dict:
    """`params` with the step size that follows the budget, where the attack has a step, the budget or
    the step count is given and the step is not: 2.5 * eps / steps (Madry et al., ICLR 2018), capped at
    the field's limit. With none of them given the attack's defaults stand (PGD's 1/255 is the rule at
    its default 4/255 in 10 steps)."""
    fields = {f.name: f for f in cls.params()}
    out = dict(params)
    if {"alpha", "eps", "steps"} <= set(fields) and "alpha" not in out and ("eps" in out or "steps" in out):
        eps = out.get("eps", fields["eps"].default)
        hi = fields["alpha"].metadata.get("hi")
        out["alpha"] = min(step_for_budget(eps, out.get("steps", fields["steps"].default)),
                           hi if hi is not None else 1.0)
    return out


@dataclass(frozen=True)
class AttackSpec:
    """One attack's settings in library units (eps and steps in pixels in [0,1]). Leave `alpha` out to
    let the step follow the budget; give it to fix the step."""

    name: str = "pgd"
    params: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_display(cls, name: str, values: Mapping[str, object] | None = None) -> "AttackSpec":
        """From values in the units a person types (eps 4 for 4/255)."""
        attack = attack_class(name)
        return cls(name, to_pixels(attack, {k: v for k, v in (values or {}).items() if v is not None}))

    def with_params(self, **changes) -> "AttackSpec":
        return AttackSpec(self.name, {**self.params, **changes})

    def resolved(self) -> dict:
        """The parameters the attack will run with beyond its defaults (the step rule applied)."""
        return follow_budget(attack_class(self.name), self.params)

    def display(self) -> dict:
        return to_display(attack_class(self.name), self.resolved())


def attack_class(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise AttackError(f"Unknown attack {name!r}; choose one of: {', '.join(ATTACKS.names()) or '(none registered)'}.")
    return ATTACKS.get(name)


def build_attack(spec: AttackSpec, error: type[Exception] = AttackError) -> Attack:
    """The attack `spec` describes: names and values checked (raising `error`), counts made whole, and the
    step that follows the budget where no step is given."""
    try:
        cls = attack_class(spec.name)
    except AttackError as exc:
        raise error(str(exc)) from None
    fields = cls.params()
    known = {f.name for f in fields}
    unknown = sorted(set(spec.params) - known)
    if unknown:
        raise error(f"{cls.title or spec.name} has no parameter {', '.join(repr(u) for u in unknown)}; "
                    f"it takes: {', '.join(sorted(known))}.")
    check_values(cls.title or spec.name, fields, spec.params, error)
    params = follow_budget(cls, spec.params)
    for f in fields:
        if f.name in params and isinstance(f.default, int) and not isinstance(f.default, bool):
            params[f.name] = int(params[f.name])
    return cls(**params)
