"""Checking what a user hands the app: labels, attack and defense settings, and image files of any kind.

Every problem a user can cause raises `InputError` with a message meant for them, so the app can show
it as is; anything else escaping from here is a bug.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..attacks.base import Attack, AttackError, check_values, from_levels, to_levels
from ..attacks import AttackSpec, build_attack
from ..defenses.base import Defense, DefenseError, Paradigm
from ..models.loading import LoadedModel, ModelLoadError
from ..registry import ATTACKS, DEFENSES, UnknownNameError

MIN_LABELS = 2
# A label list this long is no longer a teaching example, and every label costs a text-encoder pass.
MAX_LABELS = 100
# CLIP's context is 77 tokens (the teaching model's 32); a longer label would be cut silently.
MAX_LABEL_CHARS = 80
# Refuse to decode more than this (a 64-megapixel RGB image already takes ~190 MB of memory).
MAX_DECODE_PIXELS = 64_000_000
# Uploads are shrunk to this longest side right after decoding: the model sees at most a few hundred
# pixels, and smaller working images keep memory and resizing time flat.
MAX_WORKING_SIDE = 2048


class InputError(ValueError):
    """Something the user supplied cannot be used; the message says what and how to fix it."""


# Library exceptions whose messages are written for users (the app shows them as they are).
USER_ERRORS = (InputError, AttackError, DefenseError, ModelLoadError, UnknownNameError)


# ----------------------------------------------------------------------------------------- labels

def check_labels(labels: Sequence[str]) -> list[str]:
    """Strip the labels and check them: 2..MAX_LABELS labels, none empty, too long or repeated."""
    cleaned = [str(label).strip() for label in labels]
    cleaned = [label for label in cleaned if label]
    if not cleaned:
        raise InputError("No labels given: enter at least two candidate labels, one per line.")
    if len(cleaned) < MIN_LABELS:
        raise InputError(f"Only one label ({cleaned[0]!r}): zero-shot classification needs at least two "
                         "candidate labels to choose between.")
    if len(cleaned) > MAX_LABELS:
        raise InputError(f"{len(cleaned)} labels is too many: use at most {MAX_LABELS}.")
    for label in cleaned:
        if len(label) > MAX_LABEL_CHARS:
            raise InputError(f"The label {label[:30]!r}... is {len(label)} characters long; "
                             f"keep labels under {MAX_LABEL_CHARS} characters.")
    seen: dict[str, str] = {}
    for label in cleaned:
        key = " ".join(label.lower().split())
        if key in seen:
            raise InputError(f"Duplicate label {label!r}: each label must be different "
                             "(the model could not tell two identical prompts apart).")
        seen[key] = label
    return cleaned


def check_index(index: int | None, labels: Sequence[str], what: str) -> int | None:
    if index is None:
        return None
    if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < len(labels):
        raise InputError(f"The {what} must be one of the {len(labels)} labels (index 0..{len(labels) - 1}), got {index!r}.")
    return int(index)


# ------------------------------------------------------------------------- attacks and defenses

def make_attack(name: str, params: Mapping[str, object] | None = None) -> Attack:
    """Build a registered attack from UI-independent parameters (pixel units), checking every value; the
    step follows the budget where none is given (see `demo.attacks._spec`)."""
    return build_attack(AttackSpec(name, dict(params or {})), InputError)


def make_defense(paradigm: Paradigm | str, name: str, params: Mapping[str, object] | None = None) -> Defense:
    """Build a registered defense for a paradigm column ("none" fits every column)."""
    paradigm = Paradigm(paradigm)
    if name not in DEFENSES:
        raise InputError(f"Unknown defense {name!r}; choose one of: {', '.join(DEFENSES.names())}.")
    cls = DEFENSES.get(name)
    if name != "none" and cls.paradigm != paradigm:
        raise InputError(f"{cls.title or name} is a {cls.paradigm.value} defense, not a {paradigm.value} one.")
    params = dict(params or {})
    fields = cls.params()
    known = {f.name for f in fields}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"{cls.title or name} has no parameter {', '.join(unknown)}"
                         f"{'; it takes: ' + ', '.join(sorted(known)) if known else ' (it takes none)'}.")
    check_values(cls.title or name, fields, params, InputError)
    whole = {f.name for f in fields if isinstance(f.default, int) and not isinstance(f.default, bool)}
    return cls(**{k: int(v) if k in whole else v for k, v in params.items()})


# ----------------------------------------------------------------------------------------- images

def load_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """Any readable image (path, bytes or PIL) -> an 8-bit RGB PIL image of bounded size.

    Handles transparency (composited on white), grayscale, palette, 16-bit and float images, CMYK,
    EXIF rotation, animations (first frame) and huge images (refused beyond MAX_DECODE_PIXELS,
    shrunk to MAX_WORKING_SIDE otherwise).
    """
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise InputError(f"This image is too large to open safely ({exc}).") from exc
    except FileNotFoundError as exc:
        raise InputError("The image file could not be found; upload it again.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError("This file is not an image the app can read (supported: PNG, JPEG, WebP, GIF, BMP, TIFF).") from exc

    width, height = image.size
    if width < 1 or height < 1:
        raise InputError("This image is empty (zero width or height).")
    if width * height > MAX_DECODE_PIXELS:
        raise InputError(f"This image has {width}x{height} = {width * height / 1e6:.0f} megapixels; "
                         f"the limit is {MAX_DECODE_PIXELS / 1e6:.0f}. Please upload a smaller version.")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if image.format == "JPEG":
            image.draft("RGB", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))  # decode huge JPEGs at reduced scale
        image = ImageOps.exif_transpose(image) or image
        image = _to_rgb8(image)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InputError("This image file is damaged or truncated and could not be decoded.") from exc
    if max(image.size) > MAX_WORKING_SIDE:
        image.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.BICUBIC)
    return image


def _to_rgb8(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy() if image.readonly else image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb8(image)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise InputError(f"Images in colour mode {mode!r} are not supported; save it as an RGB PNG or JPEG.") from exc


def _high_depth_to_rgb8(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images, mapped to 0..255 by their nominal (or actual) range."""
    values = np.asarray(image, dtype=np.float64)
    if values.ndim == 3:
        values = values[..., :3] if values.shape[-1] >= 3 else values[..., 0]
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    if image.mode == "F":
        scale = 1.0 if top <= 1.0 else max(top, 1e-12)
    elif image.mode.startswith("I;16") or top > 255:
        scale = 65535.0 if top <= 65535 else top
    else:
        scale = 255.0
    gray = np.clip(np.nan_to_num(values / scale, nan=0.0), 0.0, 1.0)
    array = np.round(gray * 255.0).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array, "RGB")


def to_model_input(loaded: LoadedModel, image: Image.Image | str | Path | bytes) -> torch.Tensor:
    """Any image -> (1, 3, S, S) float tensor in [0,1] on the model's device, on the uint8 grid.

    For "shortest side" models the central square is cut out before resizing, which gives the same
    view as resize-then-crop but keeps extreme aspect ratios (say 1x5000 pixels) from blowing up to
    huge intermediate images.
    """
    image = load_image(image)
    if loaded.resize_mode != "squash":
        w, h = image.size
        side = min(w, h)
        left, top = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
        image = image.crop((left, top, left + side, top + side))
    return loaded.preprocess(image)


def describe_preprocessing(loaded: LoadedModel, size: tuple[int, int]) -> str:
    """In words, what `to_model_input` does to an image of `size` (width, height) for this model."""
    w, h = size
    s = loaded.image_size
    if loaded.resize_mode == "squash" or w == h:
        how = "squashed" if loaded.resize_mode == "squash" and w != h else "resized"
        return f"The model sees your {w} x {h} image {how} to {s} x {s} px (also in the Clean column)."
    side = min(w, h)
    cut = (max(w, h) - side)
    where = "left and right" if w > h else "top and bottom"
    return (f"The model sees a {s} x {s} px version (also in the Clean column): the central {side} x {side} square "
            f"of your {w} x {h} image, resized. {cut} px were cut off, split between {where}; anything there "
            f"does not count.")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) in [0,1] -> (H, W, 3) uint8, the exact pixels a PNG stores."""
    if image.ndim == 4:
        image = image[0]
    return to_levels(image.detach()).permute(1, 2, 0).cpu().numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0,1]: `to_uint8` undone exactly."""
    return from_levels(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))
