"""The stacked defense: robust tower + test-time adaptation + input transform, and its adaptive path."""
from __future__ import annotations

import pytest
import torch

from demo import world
from demo.defenses import DEFENSES, DefenseError, Paradigm
from demo.defenses.stack import Stack, allowed, from_spec
from demo.defenses.training_free.input_transform import local_generator
from demo.defenses.training_time.twin import twin_visual
from demo.eval.__main__ import main
from demo.pipeline.compare import DEFAULT_DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clf(teaching_model):
    return teaching_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])


@pytest.fixture(scope="module")
def batch():
    images, labels = world.make_batch(3, 5000, 128, "seen")[:2]
    return images, labels


def test_defaults_are_the_page_defaults():
    d = DEFENSES.create("stack")
    assert d.paradigm == Paradigm.STACKED
    assert (d.training_time, d.test_time, d.training_free) == (
        DEFAULT_DEFENSES[Paradigm.TRAINING_TIME], DEFAULT_DEFENSES[Paradigm.TEST_TIME],
        DEFAULT_DEFENSES[Paradigm.TRAINING_FREE])
    assert d.spec == "stack:tecoa+rtpt+jpeg"
    assert d.randomized and not d.differentiable


def test_flags_and_title_follow_the_parts():
    jpeg = from_spec("stack:fare+none+jpeg")
    assert not jpeg.randomized and not jpeg.differentiable and jpeg.title == "Stacked: FARE + JPEG compression"
    rrp = from_spec("stack:tecoa+none+random_resize_pad")
    assert rrp.randomized and rrp.differentiable  # resizing is differentiated exactly
    assert from_spec("stack:tecoa+none+none").differentiable


def test_bad_parts_are_defense_errors():
    with pytest.raises(DefenseError, match="training-time part"):
        Stack(training_time="apt")  # a prompt, not an image tower
    with pytest.raises(DefenseError, match="training-free part"):
        Stack(training_free="ttc")
    with pytest.raises(DefenseError, match="test-time part"):
        Stack(test_time="jpeg")
    with pytest.raises(DefenseError, match="stack:"):
        from_spec("stack:tecoa+rtpt")
    assert "tecoa" in allowed("training_time") and "rtpt" in allowed("test_time") and "jpeg" in allowed("training_free")


def test_prediction_is_the_parts_in_order(clf, batch):
    images, _ = batch
    d = Stack(test_time="tpt", eot_draws=1)
    robust = clf.with_visual(twin_visual(clf, "tecoa"))
    transformed = DEFENSES.create("jpeg").transform(images, local_generator(4)).clamp(0, 1)
    expected = DEFENSES.create("tpt").predict(robust, transformed, 4).logits
    out = d(clf, images, seed=4)
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert torch.equal(out.images, transformed)
    assert out.changed["image tower"] == "tecoa" and len(out.summary) == images.shape[0]
    # Not the plain model's answer: the robust tower and the transform change the logits.
    assert not torch.allclose(out.logits, clf(images), atol=1e-3)


def test_adaptive_path_is_bpda_through_the_transform_into_the_robust_tower(clf, batch):
    images, labels = batch
    d = from_spec("stack:tecoa+none+bit_depth")
    module = d.as_module(clf, seed=0)
    x = images.clone().requires_grad_(True)
    logits = module(x)
    assert torch.allclose(logits, d(clf, images, 0).logits, atol=1e-5)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    # BPDA: the gradient is the robust tower's at the transformed image.
    robust = clf.with_visual(twin_visual(clf, "tecoa"))
    seen = DEFENSES.create("bit_depth").transform(images, local_generator(0)).clamp(0, 1).requires_grad_(True)
    torch.nn.functional.cross_entropy(robust(seen), labels).backward()
    assert torch.allclose(x.grad, seen.grad, atol=1e-6)


def test_adaptive_cost_multiplies_the_draws():
    one = from_spec("stack:tecoa+rtpt+none").adaptive_passes()
    rrp = from_spec("stack:tecoa+rtpt+random_resize_pad")
    assert rrp.adaptive_passes().total == pytest.approx(DEFENSES.create("random_resize_pad").draws * one.total)


def test_eval_names_the_stack_row(tmp_path):
    result = main(["--model", "teaching", "--attack", "pgd", "--eps", "4", "--steps", "2", "--n", "2",
                   "--batch-size", "2", "--defenses", "stack:tecoa+none+jpeg", "--adaptive"])
    row = result["defenses"][0]
    assert row["name"] == "stack:tecoa+none+jpeg" and row["paradigm"] == "stacked"
    assert row["title"] == "Stacked: TeCoA + JPEG compression"
    assert "robust_accuracy_adaptive" in row
    with pytest.raises(SystemExit):
        main(["--model", "teaching", "--n", "2", "--defenses", "stack:apt+none+jpeg"])
