"""R-TPT's two halves (tuning, reliability-weighted vote) and TAPT's starting prompts, as options."""
import pytest
import torch

from demo.defenses import DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(teaching_model, world_batch):
    from demo import world

    clf = teaching_model.classifier(list(world.CLASSNAMES), (world.EVAL_TEMPLATE,))
    return clf, world_batch[0][:3]


def rtpt(**kw):
    return DEFENSES.create("rtpt", views=8, top_k=4, **kw)


def test_untuned_vote_ignores_the_learning_rate_the_tuned_one_does_not(setup):
    clf, x = setup
    untuned = [rtpt(tune=False, lr=lr)(clf, x, 3).logits for lr in (1e-4, 5e-2)]
    tuned = [rtpt(lr=lr)(clf, x, 3).logits for lr in (1e-4, 5e-2)]
    assert torch.allclose(*untuned) and not torch.allclose(*tuned)
    assert rtpt(tune=False)(clf, x, 3).changed["ctx_shift"] == [0.0] * 3


def test_without_the_vote_the_views_only_steer_the_tuning(setup):
    clf, x = setup
    alone = rtpt(vote=False)
    # the tuned prompt reads the full image: the readout does not depend on which views were drawn
    # beyond the tuning itself, and the adaptive path differentiates the image alone
    assert not alone.view_grad and rtpt().view_grad
    both_off = [rtpt(tune=False, vote=False)(clf, x, s).logits for s in (0, 1)]
    assert torch.allclose(*both_off)  # no tuning and no vote: the views change nothing
    voted = [rtpt(tune=False)(clf, x, s).logits for s in (0, 1)]
    assert not torch.allclose(*voted)  # the vote depends on the drawn views


def test_neighbours_are_checked_only_when_the_vote_uses_them(setup):
    from demo.defenses.base import DefenseError

    clf, x = setup
    with pytest.raises(DefenseError, match="Reliability neighbours"):
        DEFENSES.create("rtpt", views=4, top_k=10)(clf, x, 0)
    DEFENSES.create("rtpt", views=4, top_k=10, vote=False)(clf, x, 0)


def test_tapt_starting_prompts_alone_are_deterministic_and_differentiable(tiny_clf, tapt_assets, tiny_images):
    clf = tiny_clf
    start = DEFENSES.create("tapt", views=4, adapt=False)
    a, b = start(clf, tiny_images, 0), start(clf, tiny_images, 9)
    assert torch.allclose(a.logits, b.logits) and a.changed["prompt_shift"] == [0.0] * 3
    adapted = [DEFENSES.create("tapt", views=4, lr=1e-1)(clf, tiny_images, s).logits for s in (0, 9)]
    assert not torch.allclose(adapted[0], a.logits)
    x = tiny_images.clone().requires_grad_(True)
    start.as_module(clf, 0)(x).sum().backward()
    assert x.grad.abs().sum() > 0
