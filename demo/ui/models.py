"""Which model a request uses. Models are loaded once per process and only read afterwards.

Only the zoo's base models (and the model the operator started the app with) can be chosen from the
page or the API, so a visitor cannot make the server open arbitrary paths.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import time

from ..models.loading import MODEL_ENV, LoadedModel, resolve_model
from ..models.teaching import MODELS as TEACHING_MODELS
from ..models.hub import weights_cached
from ..models.zoo import DEFAULT_OFFLINE, DEFAULT_ONLINE, ZOO, spec_for
from ..pipeline import InputError
from .zerogpu import on_zerogpu

log = logging.getLogger(__name__)

# A fallback (hub unreachable) is retried after this long; a successful load is kept for good.
FALLBACK_RETRY_S = 300.0

_lock = threading.Lock()
_resolved: dict[str, tuple[LoadedModel, str, float, bool]] = {}


def _fresh_lock() -> None:
    # A GPU worker is forked while other request threads may hold this lock (see `loading._fresh_locks`).
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock)


def startup_key(requested: str | None = None) -> str:
    """The model the app starts on: the --model flag, else $DEMO_MODEL, else the real CLIP (ViT-B/32) when
    its weights are already in the local Hugging Face cache (a Space with `preload_from_hub`), else the
    offline teaching model. Starting the app never waits on the network."""
    if requested or os.environ.get(MODEL_ENV):
        return requested or os.environ[MODEL_ENV]
    return DEFAULT_ONLINE if weights_cached(spec_for(DEFAULT_ONLINE)) else DEFAULT_OFFLINE


def choices(startup: str) -> list[tuple[str, str]]:
    """(label, key) pairs for the model selector. On a ZeroGPU Space only the models that can be loaded
    at startup (`preload`): the embedded ones, and hub models whose weights are in the local cache."""
    out = [(spec.label, key) for key, spec in ZOO.items() if spec.base is None
           and (key == startup or not on_zerogpu() or not spec.online or weights_cached(spec))]
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


def loaded(key: str | None) -> LoadedModel | None:
    """The model already serving `key`, without loading anything; None when there is none yet."""
    with _lock:
        hit = _resolved.get(key) if key is not None else None
    return hit[0] if hit else None


def preload(startup: str) -> None:
    """Load every model the selector offers, with its robust twins' image towers, and the attack backend,
    in the calling thread.

    On a ZeroGPU Space this runs at startup in the main thread, where `spaces` records each model moved to
    "cuda" and hands it to the GPU workers: a model loaded later, in a request's thread, could not be. And
    a GPU worker is forked from a serving thread: a module that another thread was importing at that moment
    would stay locked in the worker for good, so the backend is imported here first."""
    from ..models.loading import ModelLoadError, load_image_tower

    try:
        importlib.import_module("torchattacks")
    except ImportError:  # the attacks say so themselves when chosen
        log.warning("torchattacks is not installed")
    offered = {key for _, key in choices(startup)}
    for key in sorted(offered, key=lambda k: k != startup):
        try:
            model = get_model(key, offered)[0]
            for twin in getattr(ZOO.get(model.key), "twins", {}).values():
                load_image_tower(twin, model.device)
        except (ModelLoadError, InputError) as exc:  # the page says so when the model or defense is chosen
            log.warning("preloading %s: %s", key, exc)


def is_teaching(model: LoadedModel) -> bool:
    """A model of the teaching world (either architecture, or a robust twin of one)."""
    return model.key in TEACHING_MODELS or model.spec.base in TEACHING_MODELS
