"""A lock held by another thread when the process forks (a ZeroGPU worker) is free in the child."""
from __future__ import annotations

import multiprocessing
import threading

from demo.timing import ForkSafeLock


def _try(lock, answers) -> None:
    answers.put(lock.acquire(timeout=2))


def _child_can_take(lock) -> bool:
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    ctx = multiprocessing.get_context("fork")
    answers = ctx.SimpleQueue()
    child = ctx.Process(target=_try, args=(lock, answers))
    child.start()
    child.join(30)
    release.set()
    holder.join()
    return answers.get()


def test_a_forked_child_gets_the_lock_fresh():
    assert _child_can_take(ForkSafeLock()) is True


def test_a_plain_lock_stays_held_in_the_child():
    # What ForkSafeLock is for: the child inherits the held state of a thread it does not have.
    assert _child_can_take(threading.Lock()) is False
