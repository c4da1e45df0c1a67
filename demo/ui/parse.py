"""Reading what the page's components hold: label text, dropdown choices, seeds, JSON parameter text.

This is the only place where values shown in /255 become pixel units.
"""
from __future__ import annotations

import json
import math

from ..pipeline import PARADIGMS, InputError
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
    """UI values -> library values: parameters shown in /255 are divided by 255."""
    units = {f.name: f.metadata.get("unit", "") for f in cls.params()}
    out = {}
    for key, value in values.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        out[key] = value / 255.0 if numeric and units.get(key) == "/255" else value
    return out


def attack_settings(name: str, eps, steps, extra: str | dict | None) -> tuple[str, dict]:
    """(attack name, parameters in pixel units) from the eps/steps sliders and the extra-parameters JSON."""
    if name not in ATTACKS:
        raise InputError(f"Unknown attack {name!r}; choose one of: {', '.join(ATTACKS.names())}.")
    cls = ATTACKS.get(name)
    params = dict(parse_json(extra, "attack parameters"))
    fields = {f.name for f in cls.params()}
    if "eps" in fields and eps is not None:
        params["eps"] = eps
    if "steps" in fields and steps is not None:
        params["steps"] = steps
    return name, from_ui_units(cls, params)


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


def parse_eps_list(text: str, unit: str) -> list[float]:
    try:
        values = [float(v) for v in str(text or "").replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"Curve eps values must be numbers separated by commas, got {text!r}.") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"Curve eps values must be finite numbers, got {text!r}.")
    return [v / 255.0 if unit == "/255" else v for v in values]
