"""Event wrappers: a handler of `handlers` (or `explore`) as a Gradio event function.

Long handlers show a progress bar and can be stopped (`jobs`); a streaming one sends each column as it
is ready; quick ones return at once. Every event that touches a model runs through a GPU function of
`zerogpu` (a plain call off ZeroGPU), with the work registered here when the page is built. Each wrapper
keeps the handler's parameter names as its signature, so the page's API documents real names.
"""
from __future__ import annotations

import functools
import inspect
import re
import threading

import gradio as gr

from ..pipeline import budget, make_attack
from ..pipeline.compare import check_defenses
from . import handlers, jobs, models, zerogpu


def _named(fn, handler, extra: tuple = (), extra_kw: dict | None = None):
    """Give `fn` the handler's positional parameters as its signature, so the API documents real names."""
    params = [p for p in inspect.signature(handler).parameters.values()
              if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    params += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for k in extra]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in (extra_kw or {}).items()]
    fn.__signature__ = inspect.Signature(params)
    fn.__name__ = handler.__name__
    fn.__doc__ = handler.__doc__
    return fn


def _flat(value):
    return handlers.flat(value) if isinstance(value, tuple) else value


def _pricer(handler, allowed: set[str]):
    """price(args) -> (encoder passes, model if loaded) of a request to `handler`, from its attack and
    defense settings alone: on a ZeroGPU Space the server prices a request without running a model."""

    def price(args: tuple):
        bound = inspect.signature(handler).bind_partial(*args)
        bound.apply_defaults()
        a = bound.arguments
        key = a.get("model_key")
        loaded = models.loaded(key) if key in allowed else None
        defenses = []
        if "training_time" in a:
            defenses = list(check_defenses(handlers.defense_settings(
                a["training_time"], a["test_time"], a["training_free"], a.get("defense_params", ""))).values())
        if "attack_name" not in a:
            return budget.defense_passes(defenses), loaded
        name, params = handlers.attack_settings(a["attack_name"], a.get("eps"), a.get("steps"),
                                                a.get("attack_params", ""))
        passes = budget.comparison_passes(make_attack(name, params), defenses, a.get("mode") == handlers.ADAPTIVE)
        if "eps_list" in a:  # a robustness curve: one comparison per budget
            passes = passes * max(1, len(re.findall(r"\d+(?:\.\d*)?", str(a["eps_list"]))))
        return passes, loaded

    return price


def long_event(handler, allowed: set[str]):
    """An event around a long handler: progress bar, flat outputs, and a run that stops when the
    session's stop token (last input) is set, the event is cancelled or the client goes away."""

    def work(*values, progress, emit):
        return _flat(handler(*values, allowed=allowed, progress=progress))

    task = zerogpu.register(work, price=_pricer(handler, allowed))

    async def run(*args, progress=gr.Progress()):
        *values, token = args
        jobs.start(token)
        try:
            async for kind, value in jobs.run(task, tuple(values), token, progress):
                if kind == "done":
                    return value
        except jobs.Cancelled:
            raise gr.Error("Stopped.", title="Stopped", print_exception=False) from None

    return _named(run, handler, ("stop_token",), {"progress": gr.Progress()})


def stream_event(handler, allowed: set[str]):
    """`long_event` for a handler that takes `emit`: each partial result it emits reaches the page at
    once (the clean column first, then the attacked one, then each defense), the full result last."""

    def work(*values, progress, emit):
        return _flat(handler(*values, allowed=allowed, progress=progress, emit=lambda view: emit(_flat(view))))

    task = zerogpu.register(work, price=_pricer(handler, allowed))

    async def run(*args, progress=gr.Progress()):
        *values, token = args
        jobs.start(token)
        try:
            async for _, value in jobs.run(task, tuple(values), token, progress):
                yield value
        except jobs.Cancelled:
            raise gr.Error("Stopped.", title="Stopped", print_exception=False) from None

    return _named(run, handler, ("stop_token",), {"progress": gr.Progress()})


def quick_event(handler, allowed: set[str]):
    task = zerogpu.register(lambda *args: _flat(handler(*args, allowed=allowed)))

    def run(*args):
        return zerogpu.run_quick(task, args, {})

    return _named(run, handler)


def gpu_event(fn):
    """`fn`, an event function of the page that touches a model, run as a quick GPU call (see `zerogpu`)."""
    task = zerogpu.register(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return zerogpu.run_quick(task, args, kwargs)

    return run


def clean_first_event(classify, limit: int):
    """The clean column at once, outside the queue (its round trips cost ~150 ms), beside the comparison,
    which sends the same column again and reports any input problem once. Bounded by its own `limit`
    slots instead of the queue: when they are all taken it skips, it never waits."""
    slots = threading.BoundedSemaphore(limit)
    skip = (gr.skip(), gr.skip(), gr.skip())

    def clean_first(*args):
        if not slots.acquire(blocking=False):
            return skip
        try:
            return classify(*args)
        except gr.Error:
            return skip
        finally:
            slots.release()

    return clean_first
