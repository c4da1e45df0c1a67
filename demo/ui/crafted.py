"""The "Crafted on" control: which model the attack is crafted on, when it is not the one that answers
(a transfer attack: Papernot et al. 2016, Liu et al. 2017).

Its values: "" (the same model, white-box), a teaching model's key (the other image tower of the teaching
world, same text tower), or "twin:METHOD" (the answering model's robust twin, e.g. its TeCoA image tower).
"""
from __future__ import annotations

from ..models.teaching import MODELS as TEACHING_MODELS
from ..models.zoo import ZOO
from ..pipeline import InputError
from ..pipeline.compare import Source
from ..pipeline.transfer import source_classifier
from ..registry import DEFENSES
from .models import get_model

SAME = ""
TWIN = "twin:"
SAME_TITLE = "The same model (white-box)"


def _twin_title(name: str) -> str:
    """The method's short name (TeCoA, FARE, ...) from the registry, the one source of each method's facts."""
    return DEFENSES.get(name).method() if name in DEFENSES else name


def _teaching_keys() -> list[str]:
    return [k for k in ("teaching", "teaching-vit") if k in TEACHING_MODELS and k in ZOO]


def choices(model_key: str) -> list[tuple[str, str]]:
    """What an attack on `model_key` can be crafted on: the same model; for a teaching model the other
    teaching tower; for any model its robust twins (loaded when chosen)."""
    out = [(SAME_TITLE, SAME)]
    spec = ZOO.get(model_key)
    if model_key in _teaching_keys():
        out += [(ZOO[k].label, k) for k in _teaching_keys() if k != model_key]
    if spec is not None:
        out += [(f"Its {_twin_title(m)} twin (robust image tower)", TWIN + m) for m in spec.twins]
    return out


def source(value: str | None, loaded, allowed: set[str]) -> Source | None:
    """The Source for a "Crafted on" value and the answering model `loaded`; None for the same model.
    InputError for a value this model offers no such source for."""
    value = (value or "").strip()
    if value in (SAME, loaded.key):
        return None
    offered = {v for _, v in choices(loaded.key)}
    if value not in offered:
        names = ", ".join(repr(v) for v in sorted(offered))
        raise InputError(f"An attack on {loaded.spec.label} cannot be crafted on {value!r}; choose one of: {names}.")
    if value.startswith(TWIN):
        from ..defenses.training_time.twin import twin_visual

        method = value[len(TWIN):]

        def robust(labels):
            clf = loaded.classifier(labels)
            return clf.with_visual(twin_visual(clf, method))

        return Source(f"the {_twin_title(method)} twin of {loaded.spec.label}", robust)
    other = get_model(value, set(allowed) | set(_teaching_keys()))[0]
    return Source(other.spec.label, lambda labels: source_classifier(other, loaded, labels))


def line(src: Source | None, loaded) -> str:
    """'Crafted on X, answered by Y.' for a transfer; '' for a white-box attack."""
    return "" if src is None else f"**Crafted on** {src.label}, **answered by** {loaded.spec.label} (a transfer attack)."
