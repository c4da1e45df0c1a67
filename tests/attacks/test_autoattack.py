"""AutoAttack-style worst case, and an independent check of the evaluation's PGD."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from demo import world
from demo.attacks import ATTACKS, AttackError
from demo.eval.metrics import wilson_interval
from demo.eval.run import EvalConfig, attack_params, evaluate, load_world


@pytest.fixture(scope="module")
def robust_clf(teaching_model):
    """TeCoA's image tower: robust enough at 1/255 that APGD-T gets survivors to attack."""
    from demo.defenses import DEFENSES

    clf = teaching_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    return DEFENSES.create("tecoa").as_module(clf, 0)


@pytest.fixture(scope="module")
def images(teaching_model):
    return load_world(24, teaching_model.image_size, "seen")


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_autoattack_is_at_least_as_strong_as_its_first_stage(robust_clf, images):
    x, y = images
    ce = ATTACKS.create("apgd_ce", eps=1 / 255, steps=5)(robust_clf, x, y, seed=0)
    aa = ATTACKS.create("autoattack", eps=1 / 255, steps=5, targets=3)(robust_clf, x, y, seed=0)
    # Same seed, same first stage: every image APGD-CE fooled stays fooled; APGD-T can only add.
    assert _accuracy(robust_clf, aa.adv_images, y) <= _accuracy(robust_clf, ce.adv_images, y)
    assert float(aa.linf.max()) <= 1 / 255 + 1e-6
    assert torch.allclose(aa.adv_images * 255, torch.round(aa.adv_images * 255), atol=1e-3)
    stages = {h["attack"] for h in aa.history}
    assert stages == {"apgd-ce", "apgd-t"}, "survivors of APGD-CE must go on to APGD-T"


def test_autoattack_cost_bound_covers_every_target():
    atk = ATTACKS.create("autoattack")
    assert (atk.steps, atk.targets) == (100, 9)  # RobustVLM's settings
    assert atk.model_calls() == 102 * 10
    assert atk.n_targets(5) == 4 and atk.n_targets(64) == 9


def test_autoattack_needs_four_labels(teaching_model):
    clf = teaching_model.classifier(["red circle", "blue square", "green star"])
    x = torch.rand(1, 3, teaching_model.image_size, teaching_model.image_size)
    with pytest.raises(AttackError, match="4 labels"):
        ATTACKS.create("autoattack", steps=2)(clf, x, torch.tensor([0]))


def _plain_pgd(model, x, y, eps, alpha, steps, generator):
    """Madry et al.'s PGD written from the paper, sharing no code with the project or torchattacks."""
    adv = (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    levels = torch.round((adv - x) * 255).clamp(-round(eps * 255), round(eps * 255))
    return (x + levels / 255).clamp(0, 1)


def test_independent_pgd_agrees_with_demo_eval(teaching_model):
    n, eps, steps = 100, 1 / 255, 10  # 1/255: accuracy in mid-range, where a weaker attack would show
    result = evaluate(EvalConfig(attack="pgd", params=attack_params("pgd", 1, None, steps), n=n, batch_size=50))
    x, y = load_world(n, teaching_model.image_size, "seen")
    clf = teaching_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    adv = _plain_pgd(clf, torch.round(x * 255) / 255, y, eps, 2.5 * eps / steps, steps, torch.Generator().manual_seed(1))
    plain = _accuracy(clf, adv, y)
    ours = result["undefended"]["robust_accuracy"]
    assert 0.1 < ours < 0.9, "the check needs a budget where the attack neither always nor never wins"
    lo, hi = wilson_interval(plain, n)
    assert lo <= ours <= hi, f"demo.eval PGD {ours:.2f} outside the plain PGD's interval [{lo:.2f}, {hi:.2f}]"
