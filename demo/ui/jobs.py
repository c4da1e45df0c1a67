"""Stopping a long run from the page.

Gradio cancels an event by dropping it; a function that is already running keeps computing. So each
browser session holds a small stop token (in `gr.State`, never in a module global): the Stop button
sets it, and the running handler checks it at every progress report (every attack step, every defense
stage) and ends with `Cancelled`. The token belongs to one session, so stopping never touches another
visitor's run.
"""
from __future__ import annotations

from typing import Callable


class Cancelled(Exception):
    """The run was stopped by the user."""


def new_token() -> dict:
    """A session's stop token (a plain dict, so gr.State can copy it for each new session)."""
    return {"stop": False}


def start(token: dict | None) -> None:
    if isinstance(token, dict):
        token["stop"] = False


def request_stop(token: dict | None) -> None:
    if isinstance(token, dict):
        token["stop"] = True


def guarded(progress: Callable | None, token: dict | None) -> Callable[[float, str], None]:
    """A progress callback for the library that relays to the page and raises Cancelled once stopped."""

    def report(fraction: float, desc: str = "") -> None:
        if isinstance(token, dict) and token.get("stop"):
            raise Cancelled("stopped by the user")
        if progress is not None:
            progress(float(fraction), desc=desc)

    return report
