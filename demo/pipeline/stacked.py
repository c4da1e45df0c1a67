"""The sixth column: the three defenses chosen on the page, stacked in one pipeline (`demo.defenses.stack`).

A chosen defense that cannot fill its slot of a stack (a learned prompt, an embedding-based purifier)
is left out, and the parts run at their defaults; the column's summary says both, so the page never
shows a stack other than the one it ran.
"""
from __future__ import annotations

from typing import Mapping

from ..defenses.base import Paradigm
from .inputs import make_defense

PARADIGMS = (Paradigm.TRAINING_TIME, Paradigm.TEST_TIME, Paradigm.TRAINING_FREE)


def with_stack(defense_objs: Mapping[Paradigm, object]) -> dict[Paradigm, object]:
    """The chosen defense per paradigm plus their stack (`demo.defenses.stack`): each chosen defense
    that can fill its slot of the stack, at its defaults; "none" for a stack with no part at all.
    Empty stays empty (attack only)."""
    if not defense_objs:
        return {}
    from ..defenses.stack import allowed

    parts = {p.value.replace("-", "_"): _part(defense_objs, p, allowed) for p in PARADIGMS}
    stack = ("none", {}) if set(parts.values()) == {"none"} else ("stack", parts)
    return {**defense_objs, Paradigm.STACKED: make_defense(Paradigm.STACKED, *stack)}


def _part(defense_objs, paradigm: Paradigm, allowed) -> str:
    d = defense_objs.get(paradigm)
    name = "none" if d is None else d.name
    return name if name in allowed(paradigm.value.replace("-", "_")) else "none"


def stack_note(defense_objs: Mapping[Paradigm, object]) -> str:
    """What the stacked column left out or changed of the chosen defenses, in words ('' when nothing)."""
    stacked = defense_objs.get(Paradigm.STACKED)
    if stacked is None:
        return ""
    from ..defenses.stack import allowed

    out, tuned = [], []
    for p in PARADIGMS:
        d = defense_objs.get(p)
        if d is None or d.name == "none":
            continue
        if d.name not in allowed(p.value.replace("-", "_")):
            out.append(d.title or d.name)
        elif any(getattr(d, f.name) != getattr(type(d)(), f.name) for f in d.params()):
            tuned.append(d.title or d.name)
    notes = []
    if out:
        notes.append(f"Left out of the stack (only robust image towers and input transforms compose with an "
                     f"adaptation): {', '.join(out)}.")
    if tuned:
        notes.append(f"In the stack each part runs at its defaults, not with the settings chosen for {', '.join(tuned)}.")
    return " ".join(notes)
