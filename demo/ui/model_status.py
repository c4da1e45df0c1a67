"""Which model answers a request, and what it sees: the status line, the note when another model
answered than the one asked for, what the model classifies of an upload and whether the image is outside
the teaching model's world."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import pipeline
from ..models import world_check
from ..pipeline import USER_ERRORS
from .errors import user_errors
from .models import get_model, is_teaching


def model_for(model_key: str, allowed: set[str]):
    """The loaded model that answers requests for `model_key` (another one after a fallback)."""
    return get_model(model_key, allowed)[0]


def model_line(model_key: str, loaded, allowed: set[str]) -> str:
    """The first line of every summary: which model answered (and why, if it is not the one asked for)."""
    note = model_note(model_key, loaded, allowed)
    return f"**Model:** {loaded.spec.label}." + (f" {note}" if note else "")


def model_note(model_key: str, loaded, allowed: set[str]) -> str:
    """'' when `loaded` is the model asked for; otherwise which model answered and why."""
    if loaded.key == model_key:
        return ""
    status = get_model(model_key, allowed)[1]
    return f"Answered by {loaded.spec.label}, not {model_key}: {status}"


@user_errors
def select_model(model_key: str, *, allowed: set[str]) -> tuple[str, bool]:
    """(status line, whether the teaching model is the one in use)."""
    model, status = get_model(model_key, allowed)
    device = "GPU" if model.device.type == "cuda" else "CPU"
    return f"**Model:** {model.spec.label} on {device}. {status if not status.startswith('Using') else ''}".strip(), \
        is_teaching(model)


def answering_model(model_key: str, *, allowed: set[str]) -> str:
    """The key of the model that answers requests for `model_key` (another one after a fallback), when
    the selector offers it; else `model_key`."""
    try:
        key = get_model(model_key, allowed)[0].key
    except USER_ERRORS:
        return model_key
    return key if key in allowed else model_key


def seen_by_model(image, model_key: str, *, allowed: set[str]) -> tuple[str, np.ndarray | None, str]:
    """What the model will see of this upload: its crop and size in words, the exact pixels it
    classifies, and the out-of-world warning ('' when the model can read the image); ("", None, "")
    without an image or for one it cannot read (the classification says why)."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return "", None, ""
    try:
        loaded = model_for(model_key, allowed)
        picture = pipeline.load_image(image if not isinstance(image, str) else Path(image))
        x = pipeline.to_model_input(loaded, picture)
        pixels = pipeline.to_uint8(x)
    except USER_ERRORS:
        return "", None, ""
    note = "**Left: exactly what the model classifies.** " + pipeline.describe_preprocessing(loaded, picture.size)
    return note, pixels, world_warning(loaded, x)


def outside_world(loaded, x: torch.Tensor) -> bool:
    """Whether the model cannot know this image (a photo shown to the teaching model)."""
    v = world_check.verdict(loaded, x)
    return bool(v is not None and v.outside)


def world_warning(loaded, x: torch.Tensor) -> str:
    """The out-of-world sentence as page text, or '' for an image the model can read."""
    return warning_text(outside_world(loaded, x))


def warning_text(outside: bool) -> str:
    return f"**&#9888; {world_check.SENTENCE}**" if outside else ""
