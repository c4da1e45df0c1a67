"""Which model a request uses. Models are loaded once per process and only read afterwards.

Only the zoo's base models (and the model the operator started the app with) can be chosen from the
page or the API, so a visitor cannot make the server open arbitrary paths.
"""
from __future__ import annotations

import os
import threading
import time

from ..models.loading import MODEL_ENV, LoadedModel, resolve_model
from ..models.teaching import MODELS as TEACHING_MODELS
from ..models.hub import weights_cached
from ..models.zoo import DEFAULT_OFFLINE, DEFAULT_ONLINE, ZOO, spec_for
from ..pipeline import InputError

# A fallback (hub unreachable) is retried after this long; a successful load is kept for good.
FALLBACK_RETRY_S = 300.0

_lock = threading.Lock()
_resolved: dict[str, tuple[LoadedModel, str, float, bool]] = {}


def startup_key(requested: str | None = None) -> str:
    """The model the app starts on: the --model flag, else $DEMO_MODEL, else the real CLIP (ViT-B/32) when
    its weights are already in the local Hugging Face cache (a Space with `preload_from_hub`), else the
    offline teaching model. Starting the app never waits on the network."""
    if requested or os.environ.get(MODEL_ENV):
        return requested or os.environ[MODEL_ENV]
    return DEFAULT_ONLINE if weights_cached(spec_for(DEFAULT_ONLINE)) else DEFAULT_OFFLINE


def choices(startup: str) -> list[tuple[str, str]]:
    """(label, key) pairs for the model selector."""
    out = [(spec.label, key) for key, spec in ZOO.items() if spec.base is None]
    if startup not in ZOO:
        out.insert(0, (spec_for(startup).label, startup))
    return out


def get_model(key: str, allowed: set[str]) -> tuple[LoadedModel, str]:
    """(model, status line) for `key`; raises InputError for a key that is not offered."""
    if key not in allowed:
        raise InputError(f"Unknown model {key!r}; choose one of: {', '.join(sorted(allowed))}.")
    with _lock:
        hit = _resolved.get(key)
        if hit and (not hit[3] or time.monotonic() - hit[2] < FALLBACK_RETRY_S):
            return hit[0], hit[1]
    model, status = resolve_model(key)
    with _lock:
        _resolved[key] = (model, status, time.monotonic(), model.key != spec_for(key).key)
    return model, status


def is_teaching(model: LoadedModel) -> bool:
    """A model of the teaching world (either architecture, or a robust twin of one)."""
    return model.key in TEACHING_MODELS or model.spec.base in TEACHING_MODELS
