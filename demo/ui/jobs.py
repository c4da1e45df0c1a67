"""Stopping long runs: the Stop button, a cancelled API job and a closed page all end the computation.

Gradio cancels an event by cancelling its asyncio task, and a dropped client only marks the event dead;
a function already running in a worker thread would keep computing either way. So a long event is an
async function (`run_stoppable`) that runs the work in a thread and keeps watching: when its task is
cancelled, when the page's stop token is set, or when the client is gone, it sets a stop flag. The
library checks that flag before every encoder pass (`demo.timing.cancellable`), so the run ends within
one pass and the worker is free again. Each run has its own flag, and each browser session its own
token (in `gr.State`), so stopping never touches another visitor's run.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..pipeline.budget import Estimated, dry_run, request_scope
from ..timing import RunCancelled, cancellable

Cancelled = RunCancelled  # what a stopped run raises, in the library and here
WATCH_S = 0.2             # how often a running event checks that its client is still there
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


def guarded(progress: Callable | None, token: dict | None) -> Callable[[float, str], None]:
    """A progress callback for the library that relays to the page and raises Cancelled once stopped."""

    def report(fraction: float, desc: str = "") -> None:
        if isinstance(token, dict) and token.get("stop"):
            raise Cancelled("stopped by the user")
        if progress is not None:
            progress(float(fraction), desc=desc)

    return report


def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand freed heap memory back to the system after a run. Each worker thread allocates from its own
    glibc arena, which keeps freed pages: with several runs at once, resident memory otherwise ratchets up
    (measured over a 3-minute mixed load test: +34.5% without this, +6.9% with it)."""
    if _TRIM is not None:
        _TRIM(0)


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


async def run_stoppable(work: Callable[[], object], token: dict | None):
    """Run `work()` in a thread until it returns, or until it is asked to stop; then re-raise."""
    stop = threading.Event()

    def should_stop() -> bool:
        return stop.is_set() or (isinstance(token, dict) and bool(token.get("stop")))

    def guarded_work():
        try:
            with cancellable(should_stop), request_scope(owner=id(token) if isinstance(token, dict) else None):
                return work()
        finally:
            release_memory()

    # The copied context carries Gradio's event id, so progress reports from the thread reach the page.
    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(_EXECUTOR, context.run, guarded_work)
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=WATCH_S)
            if done:
                return future.result()
            if not client_connected():
                stop.set()
    except asyncio.CancelledError:
        stop.set()
        raise


async def run_streaming(work: Callable[[Callable[[object], None]], object], token: dict | None):
    """Like `run_stoppable` for `work(emit)`, which calls `emit(value)` with partial results from its
    thread: yields (False, value) for each as it comes, then (True, result). Stopping works the same;
    closing the generator (the event was cancelled) stops the run."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def emit(value) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, value)
        except RuntimeError:  # the event loop is gone: nobody is watching any more
            pass

    task = asyncio.ensure_future(run_stoppable(lambda: work(emit), token))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield False, getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield False, queue.get_nowait()
            yield True, task.result()
            return
    finally:
        if not task.done():
            task.cancel()


# ZeroGPU Spaces lend a GPU per call of a function wrapped in `spaces.GPU(duration=...)`; the duration
# asked for is the request's own cost estimate with headroom, within what such a Space grants.
GPU_MIN_S, GPU_MAX_S = 15, 120


def spaces_module():
    """The `spaces` package when it is importable (on ZeroGPU Spaces), else None."""
    try:
        import spaces  # noqa: F401
    except ImportError:
        return None
    return spaces


def estimated_seconds(call: Callable[[], object]) -> float | None:
    """The budget's estimate for a handler call, found by calling it in a dry run (nothing is computed)."""
    try:
        with dry_run():
            call()
    except Estimated as est:
        return est.seconds
    except Exception:
        return None  # the real call will report what is wrong with the request
    return None


def gpu_duration(seconds: float | None) -> int:
    if seconds is None:
        return GPU_MAX_S
    return int(min(GPU_MAX_S, max(GPU_MIN_S, 1.5 * seconds + 10)))


def on_gpu(work: Callable[[], object], call: Callable[[], object]) -> Callable[[], object]:
    """`work` under `spaces.GPU` with a duration from `call`'s estimate on a ZeroGPU Space; else `work`."""
    spaces = spaces_module()
    if spaces is None:
        return work

    def run():  # priced when it runs, in the worker thread, not on the server's event loop
        return spaces.GPU(duration=gpu_duration(estimated_seconds(call)))(work)()

    return run
