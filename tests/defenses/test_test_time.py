"""Test-time prompt tuning: the prompt learner, TPT and R-TPT."""
from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from demo.defenses import DEFENSES, DefenseError, Paradigm
from demo.defenses.test_time.prompt_learner import PromptLearner
from demo.defenses.test_time.rtpt import RTPT
from demo.defenses.test_time.tpt import TPT, entropy, marginal_entropy, random_resized_crops
from demo.models.classifier import build_text_features

TEST_TIME = ["tpt", "rtpt"]
FEW_VIEWS = 8


def few(name: str, **params):
    """A test-time defense with few views (R-TPT's neighbours must then be fewer than its views)."""
    extra = {"top_k": FEW_VIEWS - 1} if name == "rtpt" else {}
    return DEFENSES.create(name, views=FEW_VIEWS, **extra, **params)


def _state(clf):
    return {k: v.detach().clone() for k, v in clf.clip.state_dict().items()}


def test_initial_context_reproduces_handwritten_prompt(tiny_model):
    labels = ["cat", "sports car", "golden retriever puppy", "x"]
    learner = PromptLearner(tiny_model.clip, tiny_model.tokenizer, labels)
    assert learner.n_ctx == 4
    expected = build_text_features(tiny_model.clip, tiny_model.tokenizer, labels, ("a photo of a {}.",))
    got = learner.text_features(learner.init_context())
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    # a different prompt must not match: the comparison can tell prompts apart
    other = build_text_features(tiny_model.clip, tiny_model.tokenizer, labels, ("a drawing of a {}.",))
    assert not torch.allclose(got, other, atol=1e-3)


def test_initial_context_reproduces_handwritten_prompt_teaching(teaching_model):
    from demo import world

    learner = PromptLearner(teaching_model.clip, teaching_model.tokenizer, world.CLASSNAMES)
    expected = teaching_model.text_features(world.CLASSNAMES, (world.EVAL_TEMPLATE,))
    assert torch.allclose(learner.text_features(learner.init_context()), expected, atol=1e-5)


def test_context_length_77_with_clip_tokenizer():
    # ViT-B-32's text layout (77 tokens, CLIP BPE) on a narrow tower, so no weights are needed
    torch.manual_seed(1)
    clip = open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                          text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2})
    clip.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    labels = ["cat", "a very long class name " * 4]
    learner = PromptLearner(clip, tokenizer, labels)
    expected = build_text_features(clip, tokenizer, labels, ("a photo of a {}.",))
    assert torch.allclose(learner.text_features(learner.init_context()), expected, atol=1e-5)


def test_text_features_batched_and_differentiable(tiny_model):
    learner = PromptLearner(tiny_model.clip, tiny_model.tokenizer, ["cat", "dog", "car"])
    ctx = learner.init_context()
    g = torch.Generator().manual_seed(0)
    moved = ctx + 0.05 * torch.randn(ctx.shape, generator=g)
    stack = torch.stack([ctx, moved]).requires_grad_(True)
    feats = learner.text_features(stack)
    assert feats.shape == (2, 3, tiny_model.clip.text_projection.shape[1])
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert torch.allclose(feats[1], learner.text_features(moved), atol=1e-5)
    assert not torch.allclose(feats[0], feats[1], atol=1e-4)
    feats[:, 0].sum().backward()
    assert stack.grad.abs().sum() > 0
    with pytest.raises(DefenseError):
        learner.text_features(torch.zeros(3, learner.width))


def test_init_context_is_fresh_and_cache_is_shared(tiny_model):
    a = PromptLearner(tiny_model.clip, tiny_model.tokenizer, ["cat", "dog"])
    b = PromptLearner(tiny_model.clip, tiny_model.tokenizer, ["cat", "dog"])
    c = PromptLearner(tiny_model.clip, tiny_model.tokenizer, ["dog", "cat"])
    assert a._frozen is b._frozen and a._frozen is not c._frozen
    ctx = a.init_context()
    ctx.add_(1.0)  # a caller mutating its context must not change the next one
    assert not torch.allclose(a.init_context(), ctx)


def test_random_context_init(tiny_model):
    learner = PromptLearner(tiny_model.clip, tiny_model.tokenizer, ["cat", "dog"], ctx_init=None, n_ctx=3)
    one = learner.init_context(torch.Generator().manual_seed(0))
    assert one.shape == (3, learner.width)
    assert torch.equal(one, learner.init_context(torch.Generator().manual_seed(0)))
    assert learner.text_features(one).shape[0] == 2
    with pytest.raises(DefenseError):
        PromptLearner(tiny_model.clip, tiny_model.tokenizer, ["cat"], ctx_init="a photo of a", n_ctx=2)


def test_views_are_seeded_and_keep_the_image_first(tiny_images):
    d = TPT(views=6)
    a = d.make_views(tiny_images, torch.Generator().manual_seed(3))
    b = d.make_views(tiny_images, torch.Generator().manual_seed(3))
    c = d.make_views(tiny_images, torch.Generator().manual_seed(4))
    assert a.shape == (3, 6, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 0], tiny_images)
    assert a.min() >= 0 and a.max() <= 1
    crops = random_resized_crops(tiny_images[0], 20, torch.Generator().manual_seed(0))
    assert not any(torch.equal(v, tiny_images[0]) for v in crops)


def test_objectives():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g) * 3
    p = logits.softmax(-1).mean(1)
    assert torch.allclose(marginal_entropy(logits), -(p * p.log()).sum(-1), atol=1e-5)
    pointwise = RTPT().objective(logits)
    assert torch.allclose(pointwise, entropy(logits).mean(1), atol=1e-6)
    # the marginal entropy exceeds the pointwise one by the views' mutual information (> 0 here)
    assert bool((marginal_entropy(logits) > pointwise + 1e-3).all())


def test_reliability_weights():
    d = RTPT(top_k=2)
    feats = torch.tensor([[[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [0.0, 1.0]]])
    w = d.view_weights(feats)
    f = F.normalize(feats[0], dim=-1)
    sim = f @ f.t()
    rel = torch.stack([sim[i][[j for j in range(4) if j != i]].topk(2).values.mean() for i in range(4)])
    assert torch.allclose(w[0], (rel / 0.01).softmax(0), atol=1e-6)
    assert int(w.argmin()) == 3  # the outlier view is trusted least


@pytest.mark.parametrize("name", TEST_TIME)
def test_registered_as_randomized_test_time(name):
    cls = DEFENSES.get(name)
    assert cls.paradigm is Paradigm.TEST_TIME and cls.randomized
    assert cls.deviation
    assert {f.name: f for f in cls.params()}["views"].metadata["hi"] >= 64


@pytest.mark.parametrize("name", TEST_TIME)
def test_episodic_and_seeded(name, tiny_model, tiny_clf, tiny_images):
    d = few(name)
    before, text_before = _state(tiny_clf), tiny_clf.text_features.clone()
    learner = PromptLearner.for_classifier(tiny_clf)
    cached = [t.clone() for t in (learner._frozen.prefix, learner._frozen.suffix, learner._frozen.init_ctx)]
    a = d(tiny_clf, tiny_images, seed=5)
    b = d(tiny_clf, tiny_images, seed=5)
    assert torch.equal(a.logits, b.logits)
    after = _state(tiny_clf)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(tiny_clf.text_features, text_before)
    assert all(torch.equal(x, y) for x, y in
               zip(cached, (learner._frozen.prefix, learner._frozen.suffix, learner._frozen.init_ctx)))
    assert all(not p.requires_grad for p in tiny_model.clip.parameters())
    # one image alone gets the answer it gets in the batch when it comes first (draws are per call)
    alone = d(tiny_clf, tiny_images[:1], seed=5)
    assert torch.allclose(alone.logits[0], a.logits[0], atol=1e-5)


@pytest.mark.parametrize("name", TEST_TIME)
def test_adaptation_moves_the_context(name, tiny_clf, tiny_images):
    out = few(name)(tiny_clf, tiny_images, seed=0)
    assert all(g > 0 for g in out.changed["ctx_grad_norm"])
    assert all(s > 0 for s in out.changed["ctx_shift"])
    assert out.changed["adapted"] is True
    assert all(len(s) == 2 for s in out.changed["selected"])  # 10% of 8 views rounds to 0: at least two
    assert out.passes["forward"] == FEW_VIEWS
    with torch.no_grad():
        assert not torch.allclose(out.logits, tiny_clf(tiny_images), atol=1e-5)


@pytest.mark.parametrize("views,kept", [(2, 2), (4, 2), (16, 2), (19, 2), (20, 2), (30, 3), (64, 6), (128, 12)])
def test_selection_keeps_ten_percent_and_never_fewer_than_two(views, kept):
    from demo.defenses.test_time.tpt import kept_views

    assert kept_views(views, 0.1) == kept
    assert kept_views(views, 1.0) == views


@pytest.mark.parametrize("name", TEST_TIME)
def test_default_is_the_papers_64_views_and_the_summary_says_how_many_were_kept(name, tiny_clf, tiny_images):
    out = DEFENSES.create(name)(tiny_clf, tiny_images[:2], seed=0)
    assert out.changed["views"] == 64 and out.changed["kept"] == 6
    assert all(len(s) == 6 for s in out.changed["selected"])
    assert len(out.summary) == 2
    assert all("64 views" in s and "kept the 6 most" in s for s in out.summary)
    # the summary speaks in label names, not class indices
    assert all(any(label in s for label in tiny_clf.classnames) for s in out.summary)


def test_rtpt_objective_differs_from_tpt_once_two_views_are_kept():
    """With a single kept view the averaged entropy is that view's entropy, and R-TPT's pointwise
    objective would equal TPT's; the selection keeps at least two, so the two objectives differ."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 5, generator=g) * 3
    assert (marginal_entropy(logits) > RTPT().objective(logits) + 1e-4).all()
    assert torch.allclose(marginal_entropy(logits[:, :1]), RTPT().objective(logits[:, :1]))


def test_tpt_selects_ten_percent(tiny_clf, tiny_images):
    out = TPT(views=64)(tiny_clf, tiny_images[:1], seed=0)
    assert len(out.changed["selected"][0]) == 6
    ent = torch.tensor(out.changed["view_entropy"][0])
    assert set(out.changed["selected"][0]) == set(ent.argsort()[:6].tolist())


def test_rtpt_weights_sum_to_one(tiny_clf, tiny_images):
    out = RTPT(views=FEW_VIEWS, top_k=FEW_VIEWS - 1)(tiny_clf, tiny_images, seed=1)
    w = torch.tensor(out.changed["view_weights"])
    assert w.shape == (3, FEW_VIEWS)
    assert torch.allclose(w.sum(1), torch.ones(3), atol=1e-5) and bool((w >= 0).all())
    assert len(out.changed["view_entropy"][0]) == FEW_VIEWS


@pytest.mark.parametrize("name", TEST_TIME)
def test_adaptive_module(name, tiny_clf, tiny_images):
    d = few(name)
    module = d.as_module(tiny_clf, seed=2)
    x = tiny_images.clone().requires_grad_(True)
    logits = module(x)
    # the first call is the defense's own forward; later calls draw new views (EOT across steps)
    assert torch.allclose(logits, d(tiny_clf, tiny_images, seed=2).logits, atol=1e-4)
    logits.gather(1, torch.zeros(3, 1, dtype=torch.long)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert module.calls == 1
    module(tiny_images)
    assert module.calls == 2


def _pgd(clf, x, y, eps, steps):
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(clf(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + eps / 4 * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


@pytest.fixture(scope="module")
def world_attack(teaching_model, world_batch):
    """An oblivious L-inf PGD (the attack does not see the defense) on a small teaching-world batch."""
    from demo import world

    clf = teaching_model.classifier(world.CLASSNAMES, (world.EVAL_TEMPLATE,))
    images, labels = world_batch
    x, y = images[:16], labels[:16]
    adv = _pgd(clf, x, y, eps=4 / 255, steps=10)
    with torch.no_grad():
        clean, robust = (clf(x).argmax(1) == y).float().mean(), (clf(adv).argmax(1) == y).float().mean()
    assert robust < clean, "the attack must work for the comparison to mean anything"
    return clf, adv, y, float(robust)


@pytest.mark.parametrize("name", TEST_TIME)
def test_does_not_lower_robust_accuracy(name, world_attack):
    clf, adv, y, undefended = world_attack
    out = few(name)(clf, adv, seed=0)
    defended = float((out.logits.argmax(1) == y).float().mean())
    assert defended >= undefended, f"{name}: {defended:.2f} robust accuracy vs {undefended:.2f} undefended"


def test_rtpt_refuses_more_neighbours_than_other_views():
    with pytest.raises(DefenseError, match="must be fewer than the views"):
        RTPT(views=8, top_k=20).check()
    RTPT(views=8, top_k=7).check()
