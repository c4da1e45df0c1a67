"""Stopping long runs: the Stop button, a cancelled API job and a closed page all end the computation.

Gradio cancels an event by cancelling its asyncio task, and a dropped client only marks the event dead;
a function already running in a worker thread would keep computing either way. So a long event is an
async function (`run`) that drives the work (`zerogpu.run_long`, on a GPU on a ZeroGPU Space) from a
thread and keeps watching: when its task is cancelled, when the page's stop token is set, or when the
client is gone, it sets the run's stop flag and closes the work's stream. The library checks the flag
before every encoder pass (`demo.timing.cancellable`), so the run ends within one pass (on ZeroGPU, at
the next heartbeat of its GPU worker plus one pass) and the worker is free again. Each run has its own
flag, and each browser session its own token (in `gr.State`), so stopping never touches another
visitor's run.
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from ..timing import RunCancelled
from . import zerogpu

Cancelled = RunCancelled  # what a stopped run raises, in the library and here
WATCH_S = zerogpu.WATCH_S  # how often a running event checks its stop token and that its client is there
# Up to LONG_EVENTS requests run at once (the events' concurrency limit), one heavy one among them (the
# compute slot in `demo.pipeline.budget`); the spare threads let stopped runs finish their last pass.
LONG_EVENTS = 4
_EXECUTOR = ThreadPoolExecutor(max_workers=LONG_EVENTS + 4, thread_name_prefix="compute")


def new_token() -> dict:
    """A session's stop token (a plain dict, so gr.State can copy it for each new session)."""
    return {"stop": False}


def start(token: dict | None) -> None:
    if isinstance(token, dict):
        token["stop"] = False


def request_stop(token: dict | None) -> None:
    if isinstance(token, dict):
        token["stop"] = True


def client_connected() -> bool:
    """False once Gradio has marked the running event dead (its client disconnected).

    Reads the queue's record of the event (gradio 6.31's `Queue.active_jobs`/`Event.alive`, pinned in
    requirements-dev.txt); outside a Gradio event it answers True.
    """
    try:
        from gradio.context import LocalContext

        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        jobs = blocks._queue.active_jobs if blocks is not None and event_id else []
    except Exception:
        return True
    for job in jobs:
        for event in job or ():
            if getattr(event, "_id", None) == event_id:
                return bool(getattr(event, "alive", True))
    return True


def _stopped(token: dict | None) -> bool:
    return isinstance(token, dict) and bool(token.get("stop"))


_RUN_IDS = itertools.count(1)


async def run(task: str, args: tuple, token: dict | None, progress=None) -> AsyncIterator[tuple[str, object]]:
    """Run the registered long task `task` on `args`: relays its progress to `progress`, yields
    ("partial", value) for each partial result and ("done", result) last. Raises Cancelled once stopped."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    run_id = next(_RUN_IDS)
    stop = zerogpu.stop_flag(run_id)

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is watching any more
            pass

    def pump() -> None:
        steps = zerogpu.run_long(task, args, {}, run_id, id(token) if isinstance(token, dict) else None)
        try:
            for item in steps:
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:
            put(("error", exc))
        finally:
            steps.close()  # a GPU worker stops at its next heartbeat
            put(("end", None))

    # The copied context carries Gradio's request, which `spaces` reads to schedule the GPU.
    loop.run_in_executor(_EXECUTOR, contextvars.copy_context().run, pump)
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(items.get(), timeout=WATCH_S)
            except asyncio.TimeoutError:
                kind, value = "tick", None
            if _stopped(token) or not client_connected():
                stop.set()
            if stop.is_set() and kind in ("partial", "done", "progress"):
                continue  # stopped: nothing more reaches the page
            if kind in ("partial", "done"):
                yield kind, value
            elif kind == "progress" and progress is not None:
                progress(value[0], desc=value[1])
            elif kind == "error":
                raise value
            elif kind == "end":
                if stop.is_set():
                    raise Cancelled("stopped by the user")
                return
    finally:
        stop.set()  # after "done" too: the pump has nothing left to relay
        zerogpu.forget(run_id)
