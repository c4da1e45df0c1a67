"""The contract every registered defense keeps, whatever its paradigm (new defenses are covered by
registering them: the list is read from the registry)."""
from __future__ import annotations

import math

import pytest
import torch

import demo.defenses  # noqa: F401  (registers every defense)
import demo.models.classifier as classifier_module
from demo import world
from demo.defenses import DEFENSES, DefenseError, Paradigm
from demo.defenses.base import DefenseModule, Weights
from demo.models import loading

NAMES = DEFENSES.names()


@pytest.fixture()
def setup(request, tiny_clf, tiny_images):
    """(defense, classifier, images) on the tiny model; weight-swap defenses need robust twins, which
    only the teaching model (and the hub models) ship, so they run on the teaching model."""
    defense = DEFENSES.create(request.param)
    if request.param == "fap":  # prompts for a ViT, which the tiny model gets from a fixture
        request.getfixturevalue("fap_assets")
        return defense, tiny_clf, tiny_images
    if defense.paradigm in (Paradigm.TRAINING_TIME, Paradigm.STACKED):  # a stack holds a robust tower too
        clf = request.getfixturevalue("teaching_model").classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
        g = torch.Generator().manual_seed(0)
        size = request.getfixturevalue("teaching_model").image_size
        images = torch.round(torch.rand(2, 3, size, size, generator=g) * 255) / 255
        return defense, clf, images
    if request.param == "tapt":  # starts from pre-trained prompts, which the tiny model gets from a fixture
        request.getfixturevalue("tapt_assets")
    return defense, tiny_clf, tiny_images


def _snapshot() -> dict[str, dict[str, torch.Tensor]]:
    """Copies of every loaded model's weights (the base models and any robust twins a defense loaded)."""
    return {f"{k}": {n: t.detach().clone() for n, t in m.clip.state_dict().items()}
            for k, m in loading._CACHE.items()}


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().flatten().view(torch.uint8)


def _assert_unchanged(before):
    after = _snapshot()
    for key, state in before.items():
        assert key in after
        assert set(after[key]) == set(state), f"{key}: state dict keys changed"
        for name, tensor in state.items():
            now = after[key][name]
            assert now.dtype == tensor.dtype and torch.equal(_raw(now), _raw(tensor)), f"{key}: {name} changed"
    for m in loading._CACHE.values():
        assert not any(p.requires_grad or p.grad is not None for p in m.clip.parameters())


def _as_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


@pytest.mark.parametrize("setup", NAMES, indirect=True)
def test_logits_shape_finite_and_reported(setup):
    defense, clf, images = setup
    out = defense(clf, images, seed=0)
    assert out.logits.shape == (images.shape[0], clf.num_classes)
    assert torch.isfinite(out.logits).all()
    assert "defense" in out.timings.as_dict() and out.timings.as_dict()["defense"] > 0
    assert set(out.passes) >= {"forward", "grad"}
    assert out.passes["forward"] + out.passes["grad"] > 0
    if out.images is not None:
        assert out.images.shape == images.shape
        assert float(out.images.min()) >= 0 and float(out.images.max()) <= 1


@pytest.mark.parametrize("setup", NAMES, indirect=True)
def test_same_seed_same_logits(setup):
    defense, clf, images = setup
    a = defense(clf, images, seed=7).logits
    b = defense(clf, images, seed=7).logits
    assert _as_bytes(a) == _as_bytes(b)


@pytest.mark.parametrize("setup", NAMES, indirect=True)
def test_shared_weights_untouched_even_after_an_error(setup, monkeypatch):
    defense, clf, images = setup
    reference = defense(clf, images, seed=1).logits  # also loads any twin weights before the snapshot
    before = _snapshot()
    assert before, "no loaded model to check"

    calls = {"n": 0}
    original = classifier_module.record_pass

    def counting(n, with_grad):
        calls["n"] += 1
        original(n, with_grad)

    monkeypatch.setattr(classifier_module, "record_pass", counting)
    defense(clf, images, seed=1)
    _assert_unchanged(before)
    total = calls["n"]
    assert total > 0, "the defense never encoded an image"

    # Fail half-way through (at the last encoder call when there is only one).
    fail_at, calls["n"] = max(1, math.ceil(total / 2)), 0

    def failing(n, with_grad):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("injected failure")
        original(n, with_grad)

    monkeypatch.setattr(classifier_module, "record_pass", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        defense(clf, images, seed=1)
    monkeypatch.setattr(classifier_module, "record_pass", original)
    _assert_unchanged(before)
    # Nothing half-done survives the failure: the next call answers as before.
    assert _as_bytes(defense(clf, images, seed=1).logits) == _as_bytes(reference)


@pytest.mark.parametrize("setup", NAMES, indirect=True)
def test_adaptive_path_reaches_the_input(setup):
    defense, clf, images = setup
    module = defense.as_module(clf, seed=0)
    x = images.clone().requires_grad_(True)
    logits = module(x)
    assert logits.shape == (images.shape[0], clf.num_classes)
    labels = torch.arange(images.shape[0]) % clf.num_classes
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0
    for m in loading._CACHE.values():  # the attack's gradient must not land on the shared weights
        assert not any(p.requires_grad or p.grad is not None for p in m.clip.parameters())


@pytest.mark.parametrize("setup", NAMES, indirect=True)
def test_out_of_range_parameter_is_a_defense_error(setup):
    defense, clf, images = setup
    bounded = [f for f in defense.params() if f.metadata.get("lo") is not None]
    if not bounded:
        return  # nothing to validate (e.g. no hyperparameters)
    f = bounded[0]
    bad = type(defense)(**{f.name: f.metadata["lo"] - 1})
    with pytest.raises(DefenseError):
        bad(clf, images, seed=0)


@pytest.mark.parametrize("setup", NAMES, indirect=True)
def test_the_adaptive_path_is_the_registered_module(setup):
    """One base for "defense as a module": a defense names its adaptive path (`module`, a DefenseModule),
    except where attacking it means attacking a classifier (no defense, a robust tower or learned prompts)."""
    defense, clf, images = setup
    assert issubclass(type(defense).module, DefenseModule)
    module = defense.as_module(clf, seed=0)
    if defense.name == "none" or defense.paradigm == Paradigm.TRAINING_TIME:
        assert not isinstance(module, DefenseModule)
    else:
        assert type(module) is type(defense).module
        assert module.defense is defense and module.clf is clf and module.num_classes == clf.num_classes


def test_the_registry_says_which_weights_each_defense_needs_and_how_they_are_trained():
    from demo.models.zoo import ZOO
    from demo.train.__main__ import TOWERS, main

    towers = DEFENSES.names(lambda c: c.trained_weights is Weights.IMAGE_TOWER)
    assert "tecoa" in towers and "none" not in towers and "apt" not in towers
    # The teaching models ship a robust tower for every such defense, and the zoo lists exactly those.
    for key in ("teaching", "teaching-vit"):
        assert sorted(ZOO[key].twins) == sorted(towers)
    assert list(TOWERS) == towers
    for name in DEFENSES.names(lambda c: c.trained_weights is not Weights.NONE):
        cls = DEFENSES.get(name)
        words = cls.trained_by.split()
        assert len(words) >= 4 and words[:3] == ["python", "-m", "demo.train"], name
        with pytest.raises(SystemExit) as exit_info:  # the command exists: its --help parses
            main(words[3:] + ["--help"])
        assert exit_info.value.code == 0, cls.trained_by
    for name in towers:
        assert DEFENSES.get(name).trained_by == f"python -m demo.train {name}"
    assert not DEFENSES.get("jpeg").trained_by and DEFENSES.get("jpeg").trained_weights is Weights.NONE
