"""Facts about the training-time defenses that the contract does not cover."""
from __future__ import annotations

import torch

import demo.defenses  # noqa: F401  (registers every defense)
from demo import world
from demo.defenses.test_time.prompt_learner import PromptLearner
from demo.defenses.training_time import apt


def test_apt_cached_prompt_features_equal_fresh_ones_and_follow_the_labels(teaching_model):
    clf = teaching_model.classifier(world.CLASSNAMES[:5], [world.EVAL_TEMPLATE])
    cached = apt.prompt_text_features(clf)
    assert apt.prompt_text_features(clf) is cached  # second call is a cache hit
    ctx = apt.learned_context("teaching")
    with torch.no_grad():
        fresh = torch.nn.functional.normalize(PromptLearner.for_classifier(clf).text_features(ctx), dim=-1)
    assert torch.allclose(cached, fresh, atol=1e-6)
    other = apt.prompt_text_features(teaching_model.classifier(world.CLASSNAMES[5:10], [world.EVAL_TEMPLATE]))
    assert other.shape == cached.shape and not torch.allclose(other, cached)
