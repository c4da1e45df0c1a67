"""Page building blocks: the lossless image components and controls generated from parameter metadata."""
from __future__ import annotations

import math

import io
import os
import tempfile
from dataclasses import MISSING, Field
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData
from gradio.processing_utils import hash_bytes
from PIL import Image

from ..attacks.base import display_scale
from ..pipeline.inputs import MAX_DECODE_PIXELS

# Uploads larger than this are refused by the server before any handler runs.
MAX_FILE_SIZE = "25mb"

CSS = """
.verdict {padding: 6px 10px; border-radius: 8px; font-size: 0.95em; margin: 2px 0;}
.verdict.ok {background: rgba(30, 142, 62, 0.14); color: #137333;}
.verdict.bad {background: rgba(217, 48, 37, 0.14); color: #a50e0e;}
.dark .verdict.ok {color: #81c995;}
.dark .verdict.bad {color: #f28b82;}
.verdict small {opacity: 0.75;}
.verdict.pending {opacity: 0.7; font-style: italic;}
.verdict.unknown {background: rgba(128, 128, 128, 0.18); color: inherit;}
#world-note p {font-size: 1.05em; padding: 8px 12px; border-left: 5px solid #b06000; background: rgba(176, 96, 0, 0.12);}
.dark #world-note p {border-left-color: #ffb347; background: rgba(255, 179, 71, 0.22);}
.verdict-strip {display: flex; flex-wrap: wrap; gap: 6px; list-style: none; padding: 0; margin: 4px 0;}
.verdict-strip .strip-item {margin: 0; padding: 4px 8px; font-size: 0.95em;}
.verdict-strip .strip-item.pending {opacity: 0.7; font-style: italic;}
.sr-only {position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);}
.method {font-size: 0.85em; opacity: 0.8; margin-bottom: 2px;}
.column-title {font-weight: 600; font-size: 1.05em;}
/* The method a defense column ran, under the paradigm's title: readable from the back of a room. */
.method-name {font-weight: 600; font-size: 1em; margin: 2px 0 4px;}
.teaching-note {border-left: 4px solid #f29900; padding-left: 10px;}
/* Model inputs are small (32 to 224 px): show them large, with crisp pixels, so perturbations can be inspected. */
.result-image img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;}
.figure img {object-fit: contain;}
/* Charts are drawn on white; in dark mode they follow the theme. Heatmaps keep their colour scales as drawn. */
.dark .chart img {filter: invert(0.9) hue-rotate(180deg);}
/* Results left over from a stopped run: still readable, visibly not current. */
#results-area.stale .result-image, #results-area.stale .figure, #results-area.stale [id^="col-"] {opacity: 0.45; filter: grayscale(1);}
#scenes {align-items: center; flex-wrap: wrap; gap: 6px;}
#scenes .scenes-title {flex: 0 0 auto; min-width: 0;}
#scenes button {flex: 0 1 auto; min-width: 0; font-size: 0.95em;}
#scene-note p {font-size: 1.1em;}
#run-state {display: none;}
/* Presenter mode (?presenter=1 or the button): large type for a projector, only what the lesson needs. */
body.presenter .gradio-container {font-size: 125%;}
body.presenter #labels-panel, body.presenter .settings-fold, body.presenter #cost-estimate,
body.presenter #examples-photo {display: none !important;}
body.presenter .verdict, body.presenter .method-name, body.presenter #scene-note p,
body.presenter #summary p, body.presenter #summary li {font-size: 1.3em;}
body.presenter .column-title p {font-size: 1.35em;}
#results-area.stale #run-state {display: block; font-size: 1.05em;}
/* On a phone, figures keep their natural size (text >= 14 px) and scroll sideways inside their box
   instead of shrinking to unreadable text; the page itself never scrolls sideways. */
@media (max-width: 700px) {
  .figure {overflow-x: auto;}
  .figure button, .figure .image-frame {justify-content: flex-start;}  /* centred, the left edge could not be reached */
  .figure img {max-width: none !important; width: auto !important; min-width: 100%; height: auto !important;}
}
"""


def cache_png(cache_dir: str, pixels: np.ndarray, compress_level: int = 6) -> ImageData:
    """Store RGB uint8 pixels as a PNG in Gradio's cache and return its reference.

    The file is content-addressed, as in Gradio's own cache, but written once and atomically (a
    temporary file renamed into place): Gradio rewrites an existing file on every request, so two
    requests producing the same picture could truncate a file while another client downloads it.
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="PNG", compress_level=compress_level)
    data = buf.getvalue()
    folder = Path(cache_dir) / hash_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "image.png"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return ImageData(path=str(path.resolve()), orig_name=path.name)


class ImageInput(gr.Image):
    """gr.Image that hands handlers the uploaded file untouched and lossless.

    The file path goes to the library's loader, which handles every color mode, bit depth, animation
    and size with clear messages; a file that is not an image at all gets a message here instead of
    a generic server error. Pasted and webcam images are stored as PNG, not lossy WebP.
    """

    is_template = True  # rendered by the standard image component in the browser

    @classmethod
    def get_component_class_id(cls) -> str:
        # The browser looks components up by this id; a new id would send it looking for custom code.
        return gr.Image.get_component_class_id()

    def postprocess(self, value):
        if isinstance(value, np.ndarray) and value.ndim == 3 and value.dtype == np.uint8:
            return cache_png(self.GRADIO_CACHE, value)
        return super().postprocess(value)

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(f"This file could not be read as an image ({type(exc).__name__}). Please upload a "
                           f"PNG, JPEG, WebP, GIF, BMP or TIFF image (at most {MAX_DECODE_PIXELS // 1_000_000} "
                           "megapixels).", title="Unreadable image") from exc


def image_box(**kwargs) -> ImageInput:
    """An ImageInput that passes the file path on as is (no mode conversion) and stores PNG."""
    kwargs.setdefault("type", "filepath")
    kwargs.setdefault("image_mode", None)
    kwargs.setdefault("format", "png")
    kwargs.setdefault("alt_text", kwargs.get("label"))  # screen readers read it (Gradio's default is none)
    # Gradio records constructor arguments by signature, so they are passed straight to gr.Image.
    return ImageInput(**kwargs)


def _number(payload, label: str):
    """A number sent to a slider or number box; anything else gets a message in the app's words
    (Gradio's own check fails with a generic server error for None, text or NaN)."""
    finite = False
    if isinstance(payload, (int, float)) and not isinstance(payload, bool):
        try:  # an int too large for a float (10**400) is no usable number either
            finite = math.isfinite(float(payload))
        except OverflowError:
            finite = False
    if not finite:
        shown = repr(payload) if len(repr(payload)) <= 40 else repr(payload)[:40] + "..."
        raise gr.Error(f"{label or 'This value'} must be a finite number, got {shown}.",
                       title="Please check the input", print_exception=False)
    return payload


class NumberSlider(gr.Slider):
    """gr.Slider that answers a missing or non-numeric value with a clear message."""

    is_template = True

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Slider.get_component_class_id()

    def preprocess(self, payload):
        return super().preprocess(_number(payload, self.label))


class NumberBox(gr.Number):
    """gr.Number that answers a non-numeric value with a clear message (empty still means its default)."""

    is_template = True

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Number.get_component_class_id()

    def preprocess(self, payload):
        return None if payload is None else super().preprocess(_number(payload, self.label))


class FigureImage(gr.Image):
    """gr.Image for the app's own figures (RGB arrays), stored as PNG with fast compression.

    The standard component compresses PNG at zlib level 6: the three figures of a comparison took about
    95 ms of its ~570 ms on the server (teaching model, 2 cores). Level 1 takes about 35 ms for files
    about 10% larger; the pixels are the same (PNG is lossless either way).
    """

    is_template = True

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Image.get_component_class_id()

    def postprocess(self, value):
        if not isinstance(value, np.ndarray):
            return super().postprocess(value)
        return cache_png(self.GRADIO_CACHE, value, compress_level=1)


# What screen readers say for each figure (the numbers behind the charts are in the tables under them).
FIGURE_ALT = {
    "heatmap": "The perturbation: the signed change amplified, and its size per pixel in /255 on a colour scale",
    "changes": "What each input-changing defense changed: signed change and its size per pixel in /255",
    "timing-chart": "Bar chart of milliseconds per stage; the table below has the same numbers",
    "steps-chart": "True-label probability (solid line) and loss (dashed line) over the attack's steps, the chosen step marked",
    "curve-chart": "True-label probability against the budget eps; the table below has the same numbers",
}


def figure_box(**kwargs) -> FigureImage:
    """A read-only figure display (heatmaps, charts) fed with RGB uint8 arrays."""
    kwargs.setdefault("format", "png")
    kwargs.setdefault("interactive", False)
    kwargs.setdefault("show_label", False)
    kwargs.setdefault("alt_text", FIGURE_ALT.get(kwargs.get("elem_id"), kwargs.get("label")))
    return FigureImage(**kwargs)


class App(gr.Blocks):
    """The page, with launch defaults that matter for a public or classroom server: an upload size
    limit, the theme and styles, and no example cache built at start-up."""

    def launch(self, *args, **kwargs):
        kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
        kwargs.setdefault("theme", gr.themes.Soft())
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("footer_links", ["api", "settings"])
        return super().launch(*args, **kwargs)


def _clean(x: float) -> float:
    return float(round(x, 6))


def param_control(f: Field, elem_id: str | None = None, value=None):
    """A control for one dataclass hyperparameter, from its `param` metadata (range, step, label, unit).

    Parameters shown in /255 (unit "/255") are scaled by 255 here (`display_scale`); `parse` divides them back.
    `value` replaces the field's default as the starting value (library units). Returns None for
    parameters without a sensible control (no default, unsupported type).
    """
    meta = f.metadata
    if f.default is MISSING:
        return None
    unit = meta.get("unit", "")
    label = (meta.get("label") or f.name.replace("_", " ")) + (" (/255)" if unit == "/255" else "")
    info = meta.get("help") or None
    default = f.default if value is None else type(f.default)(value)
    if meta.get("auto") and value is None:
        # 0 stands for "not given": the library derives the value (parse.from_ui_units leaves it out).
        default = type(f.default)(0)
        info = f"{info + ' ' if info else ''}0: automatic, {meta['auto']}."
    if isinstance(default, bool):
        return gr.Checkbox(value=default, label=label, info=info, elem_id=elem_id)
    if isinstance(default, (int, float)):
        scale = display_scale(f)
        lo, hi, step = meta.get("lo"), meta.get("hi"), meta.get("step")
        is_int = isinstance(default, int) and unit != "/255"
        if lo is not None and hi is not None:
            step = _clean(step * scale) if step else (1 if is_int else None)
            return gr.Slider(minimum=_clean(lo * scale), maximum=_clean(hi * scale), step=step,
                             value=_clean(default * scale), label=label, info=info, elem_id=elem_id)
        return gr.Number(value=_clean(default * scale), label=label, info=info, precision=0 if is_int else None,
                         elem_id=elem_id)
    if isinstance(default, str):
        return gr.Textbox(value=default, label=label, info=info, elem_id=elem_id)
    return None
