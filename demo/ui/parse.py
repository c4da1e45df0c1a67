"""Reading what the page's components hold: label text, dropdown choices, seeds, JSON parameter text.

Values shown in /255 become pixel units through `demo.attacks._spec.to_pixels`, the library's one
conversion; a parameter with an automatic value (the step that follows the budget) reads 0 for "automatic".
"""
from __future__ import annotations

import json
import math

from ..attacks.base import is_number
from ..attacks import AttackSpec, to_pixels
from ..pipeline import PARADIGMS, InputError, Request
from ..registry import ATTACKS, DEFENSES

AUTO_TRUE = "(clean prediction)"
NO_TARGET = "(none: untargeted)"
MAX_SEED = 2**32 - 1
# Parameter JSON is {"method": {"param": value}}: two levels; anything much bigger is not settings.
MAX_JSON_CHARS = 10_000
MAX_JSON_DEPTH = 3


def parse_labels(text: str | None) -> list[str]:
    """One label per line; a single line is split on commas."""
    text = (text or "").strip()
    parts = text.splitlines() if "\n" in text else text.split(",")
    return [p.strip() for p in parts if p.strip()]


def label_index(value: str | None, labels: list[str], what: str) -> int | None:
    """A dropdown's label -> its index; the 'automatic' entries and empty values mean None."""
    value = (value or "").strip()
    if value in ("", AUTO_TRUE, NO_TARGET):
        return None
    if value in labels:
        return labels.index(value)
    folded = [label.lower() for label in labels]
    if value.lower() in folded:
        return folded.index(value.lower())
    raise InputError(f"The {what} {value!r} is not one of the labels; pick it from the list or add it to the labels.")


def parse_seed(seed) -> int:
    try:
        value = float(seed if seed is not None else 0)
    except (TypeError, ValueError):
        raise InputError(f"The seed must be a whole number, got {seed!r}.") from None
    if not value.is_integer() or not 0 <= value <= MAX_SEED:
        raise InputError(f"The seed must be a whole number between 0 and {MAX_SEED}, got {seed!r}.")
    return int(value)


def parse_json(text: str | dict | None, what: str) -> dict:
    if isinstance(text, dict):
        return text
    if not text or not str(text).strip():
        return {}
    text = str(text)
    if len(text) > MAX_JSON_CHARS:
        raise InputError(f"The {what} are {len(text)} characters long; settings fit in {MAX_JSON_CHARS}.")
    if _depth(text) > MAX_JSON_DEPTH:
        raise InputError(f"The {what} are nested too deeply: use {{\"name\": {{\"param\": value}}}}.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"The {what} are not valid JSON ({exc.msg} at character {exc.pos}).") from None
    if not isinstance(data, dict):
        raise InputError(f"The {what} must be a JSON object such as {{\"name\": {{\"param\": value}}}}.")
    return data


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings, counted before parsing (deep input would exhaust the
    parser's recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def from_ui_units(cls, values: dict) -> dict:
    """UI values -> library values (pixel units); an automatic parameter at 0 is left out, so the library
    derives it (see the field's `auto`)."""
    auto = {f.name for f in cls.params() if f.metadata.get("auto")}
    return to_pixels(cls, {k: v for k, v in values.items() if not (k in auto and is_number(v) and v == 0)})


def attack_spec(name: str, eps, steps, extra: str | dict | None) -> AttackSpec:
    """The attack of the eps/steps sliders and the extra-parameters JSON, in library units."""
    if name not in ATTACKS:
        raise InputError(f"Unknown attack {name!r}; choose one of: {', '.join(ATTACKS.names())}.")
    cls = ATTACKS.get(name)
    params = dict(parse_json(extra, "attack parameters"))
    fields = {f.name for f in cls.params()}
    if "eps" in fields and eps is not None:
        params["eps"] = eps
    if "steps" in fields and steps is not None:
        params["steps"] = steps
    return AttackSpec(name, from_ui_units(cls, params))


def attack_settings(name: str, eps, steps, extra: str | dict | None) -> tuple[str, dict]:
    """(attack name, parameters in pixel units): `attack_spec` as a pair."""
    spec = attack_spec(name, eps, steps, extra)
    return spec.name, dict(spec.params)


def defense_settings(training_time: str | None, test_time: str | None, training_free: str | None,
                     params_json: str | dict | None) -> dict:
    """{paradigm: (defense name, parameters in pixel units)}; parameters are keyed by defense name."""
    given = parse_json(params_json, "defense parameters")
    out = {}
    for paradigm, name in zip(PARADIGMS, (training_time, test_time, training_free)):
        name = name or "none"
        if name not in DEFENSES:
            raise InputError(f"Unknown defense {name!r}; choose one of: {', '.join(DEFENSES.names())}.")
        params = given.get(name, {})
        if not isinstance(params, dict):
            raise InputError(f"The parameters of {name!r} must be a JSON object, got {params!r}.")
        out[paradigm] = (name, from_ui_units(DEFENSES.get(name), params))
    return out


def parse_eps_list(text: str, attack_name: str) -> list[float]:
    """Comma-separated budgets in the attack's display unit -> pixel units."""
    try:
        values = [float(v) for v in str(text or "").replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"Curve eps values must be numbers separated by commas, got {text!r}.") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"Curve eps values must be finite numbers, got {text!r}.")
    cls = ATTACKS.get(attack_name)
    return [to_pixels(cls, {"eps": v})["eps"] for v in values]


def request(labels: list[str], true_label, target, model_key: str, attack_name: str, eps, steps, mode, seed,
            attack_json="", defenses: tuple | None = None, defense_json="") -> Request:
    """The page's controls -> one `Request` in library units. `defenses` is the three paradigm
    dropdowns' values, or None for the attack alone."""
    return Request(attack=attack_spec(attack_name, eps, steps, attack_json),
                   defenses=None if defenses is None else defense_settings(*defenses, defense_json),
                   mode=mode, seed=parse_seed(seed), model=model_key,
                   true_label=label_index(true_label, labels, "true label"),
                   target=label_index(target, labels, "target label"))
