"""The page's error boundary: library errors meant for users become `gr.Error` (shown on the page, the
server keeps serving); anything else is logged and said plainly."""
from __future__ import annotations

import functools
import logging
from typing import Callable

import torch

import gradio as gr

from ..pipeline import USER_ERRORS
from ..pipeline.budget import Estimated
from .jobs import Cancelled

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None] | None


def user_errors(fn):
    """Show library errors meant for users as gr.Error; log anything else and say so plainly."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gr.Error, Cancelled, Estimated):  # Estimated: a dry run pricing the request
            raise
        except USER_ERRORS as exc:
            log.info("%s refused: %s", fn.__name__, exc)  # one line: the input was wrong, not the server
            raise gr.Error(str(exc), title="Please check the input", print_exception=False) from exc
        except torch.OutOfMemoryError as exc:
            log.warning("%s ran out of memory", fn.__name__)
            raise gr.Error("Out of memory: try fewer steps, fewer labels or fewer views.",
                           print_exception=False) from exc
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            # The details are in the server log; internal names mean nothing to a visitor.
            raise gr.Error("Something went wrong on the server while computing this (the details are logged). "
                           "The app is still running; try again or change the settings.",
                           print_exception=False) from exc
    return wrapper
