"""Targeted attacks make the teaching model say a chosen label (a generous budget, so this checks the
targeted plumbing end to end on a real trained model, not attack strength).

Targets keep the color and change the shape ("make the red star a red heart"): the teaching model
reads color from the whole image, so turning a red shape blue takes far more than a shape change.
"""
from __future__ import annotations

import pytest
import torch

from demo import world
from demo.attacks import ATTACKS

N = 16
GENEROUS = {
    "fgsm": {"eps": 2 / 255},  # one step: only small enough steps follow the gradient's promise
    "pgd": {"eps": 32 / 255, "alpha": 4 / 255, "steps": 20},
    "pgd_l2": {"eps": 8.0, "alpha": 1.0, "steps": 20},
    "cw": {"c": 100.0, "steps": 100, "lr": 0.05},
}
ITERATIVE = [n for n in ATTACKS.names(lambda c: c.supports_targeted) if n != "fgsm"]


@pytest.fixture(scope="module")
def setup(teaching_model, world_batch):
    clf = teaching_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    images, labels = world_batch[0][:N], world_batch[1][:N]
    if images.shape[-1] != teaching_model.image_size:
        images = torch.nn.functional.interpolate(images, size=teaching_model.image_size, mode="bilinear",
                                                 antialias=True, align_corners=False)
        images = torch.round(images.clamp(0, 1) * 255) / 255
    g = torch.Generator().manual_seed(0)
    shapes = len(world.SHAPES)  # class index = color * shapes + shape
    target = labels // shapes * shapes + (labels % shapes + torch.randint(1, shapes, (N,), generator=g)) % shapes
    assert bool((target != labels).all())
    return clf, images, labels, target


def test_every_targeted_attack_has_generous_settings():
    assert set(ATTACKS.names(lambda c: c.supports_targeted)) <= set(GENEROUS)


@pytest.mark.parametrize("name", ITERATIVE)
def test_targeted_attack_reaches_target(name, setup):
    clf, images, labels, target = setup
    res = ATTACKS.create(name, **GENEROUS[name])(clf, images, labels, target=target, seed=0)
    with torch.no_grad():
        pred = clf(res.adv_images).argmax(1)
    reached = (pred == target).float().mean().item()
    assert reached >= 3 / 4, f"{name}: only {reached:.0%} of images reached their target ({pred.tolist()} vs {target.tolist()})"


def test_targeted_fgsm_moves_towards_target(setup):
    clf, images, labels, target = setup
    res = ATTACKS.create("fgsm", **GENEROUS["fgsm"])(clf, images, labels, target=target, seed=0)
    with torch.no_grad():
        before = clf(images).log_softmax(1).gather(1, target[:, None])[:, 0]
        after = clf(res.adv_images).log_softmax(1).gather(1, target[:, None])[:, 0]
    # One step cannot land on a chosen class out of 64, but it must raise the target's probability.
    raised = (after > before).float().mean().item()
    assert raised >= 7 / 8, (before.tolist(), after.tolist())
