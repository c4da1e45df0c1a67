"""The cost budget: requests are priced from their parameters before any work, and refused above the limit."""
from __future__ import annotations

import pytest
import torch

import demo.attacks  # noqa: F401
import demo.defenses  # noqa: F401
from demo.pipeline import budget
from demo.pipeline.compare import check_defenses, run_comparison
from demo.pipeline.inputs import InputError, make_attack
from demo.timing import Passes, count_passes


def test_passes_follow_each_methods_parameters():
    pgd = make_attack("pgd", {"steps": 10})
    defenses = list(check_defenses({"training-time": ("none", {}), "test-time": ("tpt", {"views": 64}),
                                    "training-free": ("ttc", {"steps": 2, "eot_draws": 2})}).values())
    oblivious = budget.comparison_passes(pgd, defenses, adaptive=False)
    # clean + attacked prediction, 10 attack steps, none 1, TPT 64 views, TTC: 2 forward + 2 grad
    assert oblivious == Passes(forward=2 + 1 + 2, grad=10 + 2, batched_forward=64)
    adaptive = budget.comparison_passes(pgd, defenses, adaptive=True)
    # plus one attack through TPT (per step: 64 views + the image) and TTC (per step: 2 draws x (1 + 3))
    assert adaptive == oblivious + 10 * Passes(batched_forward=64, grad=1) + 10 * 2 * Passes(forward=1, grad=3)


def test_time_is_the_measured_pass_cost_times_the_passes():
    times = budget.PassTimes(forward=0.01, grad=0.03, batched_forward=0.002, batched_grad=0.005)
    assert times.seconds(Passes(forward=2, grad=10, batched_forward=64, batched_grad=8)) == pytest.approx(
        0.02 + 0.3 + 0.128 + 0.04)


def test_an_over_budget_request_is_refused_before_any_pass(tiny_model, tiny_images, monkeypatch):
    budget.pass_times(tiny_model)  # measured once per model, then cached
    monkeypatch.setenv(budget.LIMIT_ENV, "0.000001")
    started = []
    with count_passes() as counter, pytest.raises(InputError) as info:
        run_comparison(tiny_model, tiny_images[:1], ["cat", "dog", "car", "tree"], None, "pgd", {"steps": 200},
                       defenses={"test-time": ("tpt", {"views": 128})}, adaptive=True,
                       progress=lambda f, d="": started.append(d))
    message = str(info.value)
    assert "image-encoder passes" in message and "limit" in message
    assert "fewer attack steps (now 200)" in message and "fewer TPT views (now 128)" in message
    assert counter.total == 0 and not started  # nothing ran


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(budget.LIMIT_ENV, "300")
    assert budget.limit_seconds() == 300
    for bad in ("", "abc", "-5"):
        monkeypatch.setenv(budget.LIMIT_ENV, bad)
        assert budget.limit_seconds() == budget.DEFAULT_LIMIT_S


def test_a_request_inside_the_budget_runs(tiny_model, tiny_images, monkeypatch):
    monkeypatch.setenv(budget.LIMIT_ENV, "600")
    result = run_comparison(tiny_model, tiny_images[:1], ["cat", "dog", "car", "tree"], None, "pgd", {"steps": 2})
    assert torch.isfinite(result.columns[1].probs).all()


def test_heavy_served_requests_take_turns_and_cheap_ones_go_ahead(monkeypatch):
    """Inside served requests, work estimated above HEAVY_S holds one compute slot until its request
    ends; a second heavy request waits for it (and can be stopped while waiting); cheap ones never wait."""
    import threading
    import time

    from demo.timing import RunCancelled, cancellable

    order = []
    first_in = threading.Event()
    release_first = threading.Event()

    def heavy_request(name, hold):
        with budget.request_scope():
            budget._admit(budget.HEAVY_S + 1)
            order.append(name)
            first_in.set()
            if hold:
                release_first.wait(5)

    t = threading.Thread(target=heavy_request, args=("heavy 1", True))
    t.start()
    assert first_in.wait(5)
    with budget.request_scope():  # a cheap request goes ahead at once
        start = time.monotonic()
        budget._admit(0.1)
        assert time.monotonic() - start < 0.05
    stop = threading.Event()
    with pytest.raises(RunCancelled), cancellable(stop.is_set):  # a waiting heavy request can be stopped
        threading.Timer(0.3, stop.set).start()
        heavy_request("heavy stopped", False)
    second = threading.Thread(target=heavy_request, args=("heavy 2", False))
    second.start()
    time.sleep(0.3)
    assert order == ["heavy 1"]  # still waiting for the slot
    release_first.set()
    t.join(5), second.join(5)
    assert order == ["heavy 1", "heavy 2"]
    budget._admit(budget.HEAVY_S + 1)  # outside a served request (the library, demo.eval): no slot


def test_one_visitor_gets_one_heavy_run_at_a_time():
    import threading

    inside, leave = threading.Event(), threading.Event()

    def first():
        with budget.request_scope(owner="visitor A"):
            budget._admit(budget.HEAVY_S + 1)
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)
    with budget.request_scope(owner="visitor A"), pytest.raises(InputError, match="Another heavy run of yours"):
        budget._admit(budget.HEAVY_S + 1)
    with budget.request_scope(owner="visitor A"):
        budget._admit(0.5)  # a cheap request of the same visitor still runs
    leave.set()
    t.join(5)
    with budget.request_scope(owner="visitor A"):  # and after the first one ends, the next heavy one may start
        budget._admit(budget.HEAVY_S + 1)


def test_pass_times_wait_for_the_device_before_reading_the_clock(tiny_model, monkeypatch):
    """On a GPU the work is queued and the clock must wait for it; every timed pass synchronises."""
    synced = []
    monkeypatch.setattr(budget, "_sync", lambda device: synced.append(device))
    monkeypatch.setattr(budget, "_TIMES", {})  # measure afresh
    budget.pass_times(tiny_model)
    assert len(synced) >= 4 * 5 and set(synced) == {tiny_model.device}  # 4 kinds of pass, 5 timed runs each
