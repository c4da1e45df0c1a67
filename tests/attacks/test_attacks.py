"""The attack contract, checked for every registered attack on the tiny random CLIP."""
from __future__ import annotations

import importlib
import pkgutil
import threading

import pytest
import torch

import demo.attacks as attacks_pkg
from demo.attacks import ATTACKS, AttackError, quantize
from demo.attacks.embedding_pgd import embedding_pgd

# Few steps keep the whole file fast; the contract does not depend on the step count.
FAST = {"steps": 2}
# CW keeps the clean image until it succeeds, so it gets enough steps to change something.
FAST_BY_NAME = {"cw": {"steps": 30, "c": 10.0}}


def make(name: str, **overrides):
    cls = ATTACKS.get(name)
    fields = {f.name for f in cls.params()}
    return cls(**{k: v for k, v in {**FAST, **FAST_BY_NAME.get(name, {}), **overrides}.items() if k in fields})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def labels(tiny_clf, tiny_images):
    with torch.no_grad():
        return tiny_clf(tiny_images).argmax(1)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_contract(name, tiny_clf, tiny_images, labels):
    atk = make(name)
    before = tiny_images.clone()
    calls = []
    res = atk(tiny_clf, tiny_images, labels, seed=3, progress=lambda f, msg: calls.append((f, msg)))
    adv = res.adv_images

    assert torch.equal(tiny_images, before), "the input must not be modified"
    assert adv.shape == tiny_images.shape and res.delta.shape == tiny_images.shape
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv * 255 - torch.round(adv * 255)).abs().max()) < 1e-3, "the adversarial image must lie on the uint8 grid"
    assert torch.allclose(res.delta, adv - tiny_images)
    budget = atk.budget
    if name == "cw":
        assert budget is None
    else:
        assert budget is not None
    if budget is not None and atk.norm == "linf":
        assert float(res.linf.max()) <= budget + 1e-6
    elif budget is not None:
        assert float(res.l2.max()) <= budget + 1e-5
    assert float(res.delta.abs().max()) > 0, "the attack changed nothing"

    assert res.passes["forward"] + res.passes["grad"] > 0
    assert res.passes["grad"] >= 1
    assert res.timings.ms.get("attack", 0) > 0
    assert res.history and "loss" in res.history[-1]
    assert calls and all(0 <= f <= 1 for f, _ in calls) and calls[-1][0] == 1.0


@pytest.mark.parametrize("name", ATTACKS.names())
def test_same_seed_same_result_and_global_rng_untouched(name, tiny_clf, tiny_images, labels):
    atk = make(name)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = atk(tiny_clf, tiny_images, labels, seed=7).adv_images
    assert torch.equal(torch.get_rng_state(), state), "the caller's global RNG must not move"
    torch.rand(5)  # a different global RNG state must not matter
    second = atk(tiny_clf, tiny_images, labels, seed=7).adv_images
    assert torch.equal(first, second)


def test_random_start_depends_on_seed(tiny_clf, tiny_images, labels):
    atk = make("pgd", steps=1)
    a = atk(tiny_clf, tiny_images, labels, seed=0).adv_images
    b = atk(tiny_clf, tiny_images, labels, seed=1).adv_images
    assert not torch.equal(a, b)


def test_concurrent_calls_match_sequential(tiny_clf, tiny_images, labels):
    atk = make("pgd")
    expected = {s: atk(tiny_clf, tiny_images, labels, seed=s).adv_images for s in (1, 2)}
    got: dict = {}
    threads = [threading.Thread(target=lambda s=s: got.__setitem__(s, atk(tiny_clf, tiny_images, labels, seed=s).adv_images))
               for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(got[s], expected[s]) for s in expected)


@pytest.mark.parametrize("name", ATTACKS.names(lambda c: c.needs_labels))
def test_labels_required(name, tiny_clf, tiny_images):
    with pytest.raises(AttackError, match="labels"):
        make(name)(tiny_clf, tiny_images, None)


@pytest.mark.parametrize("name", ATTACKS.names(lambda c: c.needs_labels))
def test_bad_labels_rejected(name, tiny_clf, tiny_images):
    with pytest.raises(AttackError):
        make(name)(tiny_clf, tiny_images, torch.tensor([0, 1]))
    with pytest.raises(AttackError):
        make(name)(tiny_clf, tiny_images, torch.tensor([0, 1, 99]))


def test_apgd_dlr_needs_three_labels(tiny_model, tiny_images):
    clf = tiny_model.classifier(["cat", "dog"])
    with pytest.raises(AttackError, match=r"DLR needs >= 3 labels"):
        make("apgd_dlr")(clf, tiny_images, torch.zeros(3, dtype=torch.long))
    three = tiny_model.classifier(["cat", "dog", "car"])
    assert make("apgd_dlr")(three, tiny_images, torch.zeros(3, dtype=torch.long)).adv_images.shape == tiny_images.shape


@pytest.mark.parametrize("name", ATTACKS.names())
def test_targeted_mode(name, tiny_clf, tiny_images, labels):
    atk = make(name)
    target = (labels + 1) % tiny_clf.num_classes
    if not atk.supports_targeted:
        with pytest.raises(AttackError, match="targeted"):
            atk(tiny_clf, tiny_images, labels, target=target)
        return
    res = atk(tiny_clf, tiny_images, labels, target=target, seed=0)
    if atk.budget is not None and atk.norm == "linf":
        assert float(res.linf.max()) <= atk.budget + 1e-6
    with pytest.raises(AttackError, match="target"):
        atk(tiny_clf, tiny_images, labels, target=torch.tensor([0, 1, 99]))


def test_targeted_pgd_lowers_target_loss(tiny_clf, tiny_images, labels):
    target = (labels + 2) % tiny_clf.num_classes
    res = make("pgd", eps=16 / 255, alpha=2 / 255, steps=10)(tiny_clf, tiny_images, labels, target=target, seed=0)
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_params_out_of_range_rejected(tiny_clf, tiny_images, labels):
    with pytest.raises(AttackError, match="eps"):
        ATTACKS.create("pgd", eps=1.0)(tiny_clf, tiny_images, labels)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_params_are_declared_in_pixel_units(name):
    for f in ATTACKS.get(name).params():
        assert f.metadata.get("label"), f"{name}.{f.name} has no UI label"
        if f.metadata.get("unit") == "/255":
            assert isinstance(f.default, float) and f.default < 1, f"{name}.{f.name} must be a float in pixel units"


def test_every_attack_module_registers_something():
    registered_modules = {ATTACKS.get(n).__module__ for n in ATTACKS.names()}
    for info in pkgutil.iter_modules(attacks_pkg.__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"demo.attacks.{info.name}")
        assert module.__name__ in registered_modules, f"demo/attacks/{info.name}.py registers no attack"
    for name in ("fgsm", "pgd", "pgd_l2", "cw", "apgd_ce", "apgd_dlr", "embedding_pgd"):
        assert name in ATTACKS


def test_embedding_pgd_functional_core_leaves_trainable_encoder_untouched():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    images = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        ref = enc(images)
    g = torch.Generator().manual_seed(0)
    adv = embedding_pgd(enc, images, ref, eps=4 / 255, alpha=1 / 255, steps=5, generator=g)
    assert all(p.grad is None for p in enc.parameters())
    assert float((adv - images).abs().max()) <= 4 / 255 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert float((enc(adv) - ref).pow(2).sum(1).min()) > 0
    again = embedding_pgd(enc, images, ref, 4 / 255, 1 / 255, 5, torch.Generator().manual_seed(0))
    assert torch.equal(adv, again)


def test_embedding_pgd_moves_embedding_more_than_random_noise(tiny_clf, tiny_images):
    res = make("embedding_pgd", steps=5, eps=8 / 255, alpha=2 / 255)(tiny_clf, tiny_images, seed=0)
    with torch.no_grad():
        clean = tiny_clf.encode(tiny_images, normalize=False)
        noise = (tiny_images + (torch.rand_like(tiny_images) * 2 - 1) * 8 / 255).clamp(0, 1)
        d_adv = (tiny_clf.encode(res.adv_images, normalize=False) - clean).pow(2).sum(1)
        d_noise = (tiny_clf.encode(quantize(noise), normalize=False) - clean).pow(2).sum(1)
    assert bool((d_adv > d_noise).all())


def test_quantization_keeps_boundary_pixels_at_the_budget():
    # FGSM/PGD put most pixels exactly at +-eps; float error must not cost them a whole level.
    from demo.attacks.base import quantize_in_budget

    g = torch.Generator().manual_seed(0)
    x = torch.round(torch.rand(2, 3, 64, 64, generator=g) * 255) / 255
    for e in (1, 4, 8):
        eps = e / 255
        adv = (x + torch.sign(torch.rand(x.shape, generator=g) - 0.5) * eps).clamp(0, 1)
        q = quantize_in_budget(adv, x, eps, "linf")
        inside = ((x >= eps) & (x <= 1 - eps))  # pixels the [0,1] clamp leaves alone
        levels = ((q - x).abs() * 255)[inside]
        assert float((levels - e).abs().max()) < 1e-3
        assert float((q - x).abs().max()) <= eps + 1e-6


def test_quantization_rounds_to_the_nearest_level_inside_the_budget():
    from demo.attacks.base import quantize_in_budget

    x = torch.full((1, 3, 2, 2), 100 / 255)
    shifts = torch.tensor([2.6, 2.4, -2.6, 3.9, 4.4, -4.49, 0.5001, -0.4999, 2.5, 1.0, -1.0, 0.0]) / 255
    adv = x + shifts.view(1, 3, 2, 2)
    levels = torch.round((quantize_in_budget(adv, x, 4 / 255, "linf") - x) * 255).flatten()
    # nearest level (truncation would give 2, 2, -2, 3, ...), capped at the 4/255 budget
    assert levels.tolist() == [3, 2, -3, 4, 4, -4, 1, 0, 2, 1, -1, 0]
    # a budget between two levels caps at the level below it
    half = quantize_in_budget(x + 2.5 / 255, x, 2.5 / 255, "linf")
    assert torch.allclose((half - x) * 255, torch.full_like(x, 2.0), atol=1e-4)


def test_l2_quantization_respects_the_budget_on_large_images():
    # Rounding noise alone has norm ~0.25 at 3x128x128: shrinking the rounded delta cannot converge.
    from demo.attacks.base import quantize_in_budget

    g = torch.Generator().manual_seed(0)
    x = torch.round(torch.rand(2, 3, 128, 128, generator=g) * 255) / 255
    d = torch.randn(x.shape, generator=g)
    for eps in (0.5, 4.0):
        adv = x + d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps
        adv = x + (adv.clamp(0, 1) - x)
        q = quantize_in_budget(adv, x, eps, "l2")
        n = (q - x).flatten(1).norm(dim=1)
        assert float(n.max()) <= eps + 1e-5
        assert float(n.min()) > 0.5 * eps, "the perturbation must survive quantization"
        assert float((q * 255 - torch.round(q * 255)).abs().max()) < 1e-3


def test_attack_restores_each_submodule_mode(tiny_model, tiny_images):
    # A wrapper in training mode (the nn.Module default) around the shared CLIP in eval mode: the
    # attack must leave both as they were (BatchNorm towers would switch to batch statistics).
    clf = tiny_model.classifier(["cat", "dog", "car"])
    assert not clf.training, "classifiers are built in eval mode, like the CLIP they wrap"
    clf.training = True
    assert not tiny_model.clip.training
    make("pgd")(clf, tiny_images, torch.zeros(3, dtype=torch.long))
    assert clf.training
    assert not any(m.training for m in tiny_model.clip.modules())
