"""Share a setup as a link: the example, labels, attack and defenses as URL query parameters.

A teacher presses "Share this setup" and hands out the link; opening it sets the same controls. Only
examples can travel in a link (an uploaded image stays on the teacher's machine), and every value is
checked against what the page offers, so a hand-edited link cannot set anything else.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from ..pipeline import PARADIGMS
from ..registry import ATTACKS, DEFENSES
from . import assets
from .parse import parse_labels

KEYS = ("example", "labels", "true", "attack", "eps", "steps", "mode", "seed") + tuple(p.value for p in PARADIGMS) + (
    "crafted",)
MODES = ("oblivious", "adaptive")
MAX_LABELS_CHARS = 4000


def _examples() -> dict[str, tuple[str, str]]:
    """URL name ("teaching_cyan_triangle") -> (path, labels) of every example image."""
    return {Path(path).stem: (path, labels) for kind in ("teaching", "photo")
            for path, _, labels in assets.examples(kind)}


def example_name(image) -> str | None:
    """The URL name of `image` when it is one of the examples (compared by file content, since the
    page hands handlers a cached copy), else None."""
    if not isinstance(image, str) or not Path(image).is_file():
        return None
    data = Path(image).read_bytes()
    for name, (path, _) in _examples().items():
        if Path(path).stat().st_size == len(data) and Path(path).read_bytes() == data:
            return name
    return None


def share_query(image, labels_text: str, attack: str, eps, steps, mode: str, seed, *rest: str) -> str:
    """The query string ("?example=...&attack=...") that reopens this setup; labels are left out when
    they are the example's own, the true label when it is the example's class. `rest`: one defense per
    paradigm, then (optionally) the true label and the model the attack is crafted on ("" for the same)."""
    defenses, true_label = rest[:len(PARADIGMS)], (rest[len(PARADIGMS):] or ("",))[0]
    crafted_on = (rest[len(PARADIGMS) + 1:] or ("",))[0]
    params: dict[str, str] = {}
    name = example_name(image)
    if name:
        params["example"] = name
    if not name or labels_text.strip() != _examples()[name][1].strip():
        params["labels"] = labels_text.strip()[:MAX_LABELS_CHARS]
    known = assets.example_class(_examples()[name][0]) if name else None
    if true_label and true_label in parse_labels(labels_text) and true_label != known:
        params["true"] = true_label
    params.update({"attack": attack, "eps": f"{float(eps):g}", "steps": str(int(steps)), "mode": mode,
                   "seed": str(int(seed or 0))})
    params.update({p.value: d for p, d in zip(PARADIGMS, defenses)})
    if crafted_on:
        params["crafted"] = crafted_on
    return "?" + urlencode(params)


def _number(text: str, lo: float, hi: float) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if lo <= value <= hi else None


def apply_query(query: dict[str, str]) -> dict[str, object]:
    """The control values a link asks for, by KEYS name; invalid or unknown values are dropped (the
    page keeps its own value for them)."""
    out: dict[str, object] = {}
    examples = _examples()
    if query.get("example") in examples:
        out["image"], out["labels"] = examples[query["example"]]
        out["true"] = assets.example_class(out["image"])
    if "labels" in query and query["labels"].strip():
        out["labels"] = query["labels"][:MAX_LABELS_CHARS]
    labels = parse_labels(str(out.get("labels", "")))
    if query.get("true", "").strip() in labels:
        out["true"] = query["true"].strip()
    if out.get("true") not in labels:  # a class the labels do not name cannot judge anything
        out.pop("true", None)
    attack = query.get("attack")
    if attack in ATTACKS:
        out["attack"] = attack
    for key, lo, hi in (("eps", 0, 255), ("steps", 1, 1000), ("seed", 0, 2**31 - 1)):
        value = _number(query.get(key), lo, hi)
        if value is not None:
            out[key] = value if key == "eps" else int(value)
    if query.get("mode") in MODES:
        out["mode"] = query["mode"]
    for p in PARADIGMS:
        name = query.get(p.value)
        if name == "none" or (name in DEFENSES and DEFENSES.get(name).paradigm == p):
            out[p.value] = name
    if "crafted" in query and _crafted_ok(query["crafted"]):
        out["crafted"] = query["crafted"]
    return out


def _crafted_ok(value: str) -> bool:
    """A "Crafted on" value some model offers ("" for the same model; the handler checks it fits the model)."""
    from ..models.zoo import ZOO
    from .crafted import SAME, TWIN

    twins = {m for spec in ZOO.values() for m in spec.twins}
    return value == SAME or value in ("teaching", "teaching-vit") or (
        value.startswith(TWIN) and value[len(TWIN):] in twins)
