"""TAPT and the multi-modal prompts it tunes, checked against the official code's structure
(xinwong/TAPT `trainers/adv_vlj.py`, MaPLe's prompt placement) on a small random ViT."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import demo.defenses  # noqa: F401
from demo.defenses import DEFENSES, DefenseError
from demo.defenses.test_time import maple, tapt
from demo.defenses.test_time.tpt import entropy, marginal_entropy, random_resized_crops
from demo.models.classifier import build_text_features

LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def clf(tiny_vit):
    clf, d = tiny_vit("vit4")
    prompts = maple.fresh_prompts(clf, torch.Generator().manual_seed(0))
    with torch.no_grad():  # stored statistics: those of other images, so the alignment has work to do
        _, inputs = maple.encode_image(clf, torch.rand(32, 3, 32, 32), prompts, prompts.depth - 1)
        mean, var = tapt.token_stats(inputs)
    save_file({k: v.contiguous() for k, v in prompts.state_dict().items()}, str(d / "p.safetensors"))
    save_file({"adv_mean": mean, "adv_var": var, "clean_mean": mean * 0.5, "clean_var": var * 2},
              str(d / "s.safetensors"))
    tapt.ASSETS[clf.model_key] = (d / "p.safetensors", d / "s.safetensors")
    return clf


def test_depth_keeps_three_quarters_of_the_blocks():
    assert [maple.prompt_depth(n) for n in (12, 6, 4, 1)] == [9, 5, 3, 1]


def test_prompt_tokens_follow_the_patches_and_are_replaced_at_each_prompted_block(clf):
    prompts = maple.fresh_prompts(clf, torch.Generator().manual_seed(1))
    x = torch.rand(2, 3, 32, 32)
    _, inputs = maple.encode_image(clf, x, prompts, keep_inputs=4)
    vp = prompts.visual_prompts()
    assert len(vp) == prompts.depth == 3 and inputs[0].shape == (2, 1 + 16 + 2, 32)
    for i in (1, 2):  # blocks 1..J-1 see this depth's prompt, whatever the previous block made of it
        assert torch.allclose(inputs[i][:, -2:], vp[i].expand(2, -1, -1))
    assert not torch.allclose(inputs[3][:, -2:], vp[2].expand(2, -1, -1))  # beyond J they pass through
    # [CLS, patches, P0, P1]: the first block sees the plain tower's tokens (ln_pre works per token), then
    # the prompt, which gets no positional embedding
    plain = clf.clip.visual._embeds(clf.normalize(x))
    assert torch.allclose(inputs[0][:, :-2], plain, atol=1e-6)
    assert torch.allclose(inputs[0][:, -2:], clf.clip.visual.ln_pre(vp[0]).expand(2, -1, -1), atol=1e-6)


def test_text_prompts_start_from_the_hand_written_prompt(clf):
    prompts = maple.fresh_prompts(clf, torch.Generator().manual_seed(0))
    text = maple.learner(clf)
    hand = build_text_features(clf.clip, clf.tokenizer, LABELS, ["a photo of a {}."])
    assert torch.allclose(text.text_features(prompts.ctx), hand, atol=1e-5)
    # the deep text prompt replaces the context positions at the input of text block 1
    assert not torch.allclose(maple.text_features(text, prompts), hand, atol=1e-3)


def test_alignment_is_zero_on_the_views_own_statistics():
    inputs = [torch.randn(6, 5, 4) for _ in range(3)]
    mean, var = tapt.token_stats(inputs)
    assert torch.allclose(var[1], inputs[1].var(0, unbiased=False))
    assert float(tapt.alignment(mean, var, mean, var)) == 0
    assert float(tapt.alignment(mean, var, mean + 1, var)) == pytest.approx(0.5 * 3)


def _objective(defense, clf, prompts, views, selected, stats):
    feats, inputs = maple.encode_image(clf, views, prompts, keep_inputs=prompts.depth - 1)
    logits = clf.logit_scale * feats @ maple.text_features(maple.learner(clf), prompts).t()
    mean, var = tapt.token_stats([x[selected] for x in inputs])
    align = (defense.gamma * tapt.alignment(mean, var, stats["adv_mean"], stats["adv_var"])
             + (1 - defense.gamma) * tapt.alignment(mean, var, stats["clean_mean"], stats["clean_var"]))
    return float(marginal_entropy(logits[selected].unsqueeze(0))[0] + defense.align_weight / prompts.depth * align)


def test_one_step_lowers_the_objective_and_leaves_the_pretrained_prompts_alone(clf):
    defense = DEFENSES.create("tapt", lr=1e-3)
    start, stats = tapt.pretrained(clf)
    saved = {k: v.clone() for k, v in start.state_dict().items()}
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    tuned, info = defense.tune(clf, image, torch.Generator().manual_seed(5))
    views = torch.cat([image.unsqueeze(0), random_resized_crops(image, 63, torch.Generator().manual_seed(5))])
    selected = torch.tensor(info["selected"])
    with torch.no_grad():
        feats, _ = maple.encode_image(clf, views, start)
        logits = clf.logit_scale * feats @ maple.text_features(maple.learner(clf), start).t()
        assert selected.tolist() == entropy(logits).argsort(stable=True)[:6].tolist()  # 10% of 64 views
        before = _objective(defense, clf, start, views, selected, stats)
        after = _objective(defense, clf, tuned, views, selected, stats)
    assert after < before
    assert all(torch.equal(v, saved[k]) for k, v in start.state_dict().items())
    assert info["prompt_shift"] > 0


def test_tapt_needs_a_vit_and_its_prompts(clf, teaching_model):
    from demo import world

    with pytest.raises(DefenseError, match="Vision Transformer"):
        DEFENSES.create("tapt")(teaching_model.classifier(world.CLASSNAMES[:3]), torch.rand(1, 3, 128, 128), seed=0)
    tapt.ASSETS.pop("nowhere", None)
    bare = clf.__class__(clf.clip, clf.mean.flatten().tolist(), clf.std.flatten().tolist(), clf.text_features,
                         clf.classnames, clf.logit_scale)
    bare.model_key, bare.tokenizer = "nowhere", clf.tokenizer
    with pytest.raises(DefenseError, match="pre-trained prompts"):
        DEFENSES.create("tapt")(bare, torch.rand(1, 3, 32, 32), seed=0)


def test_building_prompts_leaves_the_global_random_state_alone(clf):
    state = torch.random.get_rng_state()
    a = maple.fresh_prompts(clf, torch.Generator().manual_seed(4))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = maple.fresh_prompts(clf, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))



def test_the_pretrained_prompts_are_kept_per_device(clf):
    """A process can hold the same model on the CPU and on a GPU: each device gets its own copy of the
    prompts and statistics. A classifier that reports the `meta` device stands in for the GPU one."""
    import types

    on_cpu, _ = tapt.pretrained(clf)
    elsewhere = types.SimpleNamespace(clip=clf.clip, tokenizer=clf.tokenizer, classnames=clf.classnames,
                                      model_key=clf.model_key, device=torch.device("meta"))
    on_meta, stats = tapt.pretrained(elsewhere)
    assert next(on_cpu.parameters()).device.type == "cpu" and next(on_meta.parameters()).device.type == "meta"
    assert all(v.device.type == "meta" for v in stats.values())
    assert tapt.pretrained(clf)[0] is on_cpu  # still loaded once per device


def test_building_prompts_never_reseeds_a_gpu(clf, monkeypatch):
    """Prompts seed their initialisation inside a fork of the CPU generator only; torch.manual_seed would
    also reseed every GPU generator, which the fork does not restore."""
    from demo.defenses.training_time import fap

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    maple.fresh_prompts(clf, torch.Generator().manual_seed(3))
    fap.fresh_prompts(clf, torch.Generator().manual_seed(3))
    assert reseeded == []
