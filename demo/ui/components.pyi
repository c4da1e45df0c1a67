"""Page building blocks: the lossless image component and controls generated from parameter metadata."""
from __future__ import annotations

from dataclasses import MISSING, Field

import gradio as gr

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
.method {font-size: 0.85em; opacity: 0.8; margin-bottom: 2px;}
.column-title {font-weight: 600; font-size: 1.05em;}
.teaching-note {border-left: 4px solid #f29900; padding-left: 10px;}
"""

from gradio.events import Dependency

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

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(f"This file could not be read as an image ({type(exc).__name__}). Please upload a "
                           f"PNG, JPEG, WebP, GIF, BMP or TIFF image (at most {MAX_DECODE_PIXELS // 1_000_000} "
                           "megapixels).", title="Unreadable image") from exc
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


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


def param_control(f: Field, elem_id: str | None = None):
    """A control for one dataclass hyperparameter, from its `param` metadata (range, step, label, unit).

    Parameters shown in /255 (unit "/255") are scaled by 255 here; handlers divide them back.
    Returns None for parameters without a sensible control (no default, unsupported type).
    """
    meta = f.metadata
    if f.default is MISSING:
        return None
    unit = meta.get("unit", "")
    label = (meta.get("label") or f.name.replace("_", " ")) + (" (/255)" if unit == "/255" else "")
    info = meta.get("help") or None
    default = f.default
    if isinstance(default, bool):
        return gr.Checkbox(value=default, label=label, info=info, elem_id=elem_id)
    if isinstance(default, (int, float)):
        scale = 255.0 if unit == "/255" else 1.0
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