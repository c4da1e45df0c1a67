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
