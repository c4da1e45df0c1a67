"""Many images at once: per-image results as they finish, column accuracies with Wilson intervals, the
budget, Stop, and the published number beside each column."""
from __future__ import annotations

import pytest
import torch

from demo import world
from demo.attacks import ATTACKS
from demo.eval.metrics import wilson_interval
from demo.eval.run import load_world
from demo.pipeline.inputs import InputError
from demo.eval.population import iter_population, max_images, published_reference, run_population

pytestmark = pytest.mark.usefixtures("one_thread")
PGD = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 2}


def test_updates_per_image_and_scores_match_them(tiny_model):
    updates = list(iter_population(tiny_model, "pgd", PGD, {"training-free": ("bit_depth", {})}, n=4, seed=3))
    assert [u.done for u in updates] == [1, 2, 3, 4] and all(u.total == 4 for u in updates)
    images, labels = load_world(4, tiny_model.image_size, "seen")
    clf = tiny_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    with torch.no_grad():
        clean = clf(images).argmax(1).tolist()
    assert [u.image.predictions["clean"] for u in updates] == clean
    assert [u.image.label for u in updates] == labels.tolist()
    last = {s.key: s for s in updates[-1].scores}
    assert list(last) == ["clean", "attacked", "training-free"]
    for key, score in last.items():
        right = sum(u.image.correct(key) for u in updates)
        assert score.correct == right and score.n == 4
        assert score.interval == wilson_interval(right / 4, 4)


def test_same_seed_same_answers_and_progress_reaches_one(tiny_model):
    calls = []
    a = run_population(tiny_model, "pgd", PGD, n=3, seed=1, progress=lambda f, m: calls.append(f))
    b = run_population(tiny_model, "pgd", PGD, n=3, seed=1)
    assert [r.predictions for r in a.images] == [r.predictions for r in b.images]
    assert calls[-1] == 1.0 and not a.stopped and len(a.to_dict()["per_image"]) == 3


def test_stop_keeps_what_was_finished(tiny_model):
    seen = []
    result = run_population(tiny_model, "pgd", PGD, n=5, on_image=seen.append, should_stop=lambda: len(seen) >= 2)
    assert result.stopped and len(result.images) == 2 and result.scores[0].n == 2


def test_stop_inside_an_image_ends_within_a_pass(tiny_model):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # true in the middle of the first image's attack

    result = run_population(tiny_model, "pgd", {"eps": 8 / 255, "alpha": 2 / 255, "steps": 20}, n=3, should_stop=stop)
    assert result.stopped and result.images == []


def test_over_the_limit_is_refused_before_any_work(tiny_model, monkeypatch):
    monkeypatch.setenv("DEMO_MAX_SECONDS", "0.0001")
    with pytest.raises(InputError, match="fewer images"):
        next(iter_population(tiny_model, "pgd", PGD, n=50))


def test_max_images_follows_the_limit(tiny_model, monkeypatch):
    atk = ATTACKS.create("pgd", **PGD)
    monkeypatch.setenv("DEMO_MAX_SECONDS", "1000")
    many = max_images(tiny_model, atk, {}, False)
    monkeypatch.setenv("DEMO_MAX_SECONDS", "0.5")
    assert max_images(tiny_model, atk, {}, False) < many


@pytest.mark.parametrize("bad", [0, 501, 2.5, "ten"])
def test_bad_counts_refused(tiny_model, bad):
    with pytest.raises(InputError, match="number of images"):
        next(iter_population(tiny_model, "pgd", PGD, n=bad))


def test_bad_column_and_split_refused(tiny_model):
    with pytest.raises(InputError, match="column"):
        next(iter_population(tiny_model, "pgd", PGD, {"sideways": ("jpeg", {})}, n=2))
    with pytest.raises(InputError, match="split"):
        next(iter_population(tiny_model, "pgd", PGD, n=2, split="everything"))


def _result(key, eps, n, clean, robust, kind="corners"):
    return {"model": {"key": key}, "data": {"source": "world", "n": n},
            "attack": {"name": "noise", "params": {"eps": eps, "kind": kind}, "targeted": False},
            "undefended": {"clean_accuracy": clean, "robust_accuracy": robust}, "defenses": []}


def test_published_reference_matches_the_setting_only():
    atk = ATTACKS.create("noise", eps=4 / 255)
    results = {"a": _result("teaching", 4 / 255, 200, 0.9, 0.85), "b": _result("teaching", 4 / 255, 500, 0.95, 0.94),
               "other_eps": _result("teaching", 1 / 255, 900, 0.5, 0.5),
               "other_kind": _result("teaching", 4 / 255, 900, 0.5, 0.5, kind="gaussian"),
               "other_model": _result("teaching-vit", 4 / 255, 900, 0.5, 0.5)}
    assert published_reference("teaching", atk, None, False, "seen", "attacked", results) == (0.94, 500, "b")
    assert published_reference("teaching", atk, None, False, "seen", "clean", results) == (0.95, 500, "b")
    assert published_reference("teaching", atk, None, False, "held_out", "clean", results) is None


def test_a_stacked_column(teaching_model):
    stack = ("stack", {"training_time": "tecoa", "test_time": "none", "training_free": "jpeg"})
    result = run_population(teaching_model, "pgd", PGD, {"stacked": stack, "training-free": ("jpeg", {})}, n=2)
    keys = [s.key for s in result.scores]
    assert keys == ["clean", "attacked", "training-free", "stacked"]
    assert result.scores[-1].title == "Stacked: TeCoA + JPEG compression"
    assert all("stacked" in r.predictions for r in result.images)
