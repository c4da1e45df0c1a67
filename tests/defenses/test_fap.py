"""FAP: its prompt structure and training objective, checked against the official code
(lionel-w2/FAP `trainers/fap.py`, `attack/pgd.py`) on a small random ViT."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import demo.defenses  # noqa: F401
from demo import world
from demo.defenses import DEFENSES, DefenseError
from demo.defenses.test_time import maple
from demo.defenses.training_time import fap
from demo.models.loading import load_model
from demo.train import fap_prompts as fap_train



@pytest.fixture(scope="module")
def clf(tiny_vit):
    clf, d = tiny_vit("vit4-fap")
    prompts = fap.fresh_prompts(clf, torch.Generator().manual_seed(0))
    with torch.no_grad():  # trained-looking prompts: away from their initialisation
        for p in prompts.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    save_file({k: v.contiguous() for k, v in prompts.state_dict().items()}, str(d / "fap.safetensors"))
    fap.PROMPTS[clf.model_key] = d / "fap.safetensors"
    fap._LOADED.pop((clf.model_key, str(clf.device)), None)
    return clf


def test_deep_text_prompts_are_maps_of_the_free_image_prompts(clf):
    prompts = fap.fresh_prompts(clf, torch.Generator().manual_seed(1))
    assert prompts.depth == maple.prompt_depth(4) == 3
    assert prompts.deep_image.shape == (2, maple.N_CTX, 32) and prompts.ctx.shape == (maple.N_CTX, 16)
    vp = prompts.visual_prompts()
    assert torch.allclose(vp[0], prompts.to_image(prompts.ctx))  # block 0: the text context, coupled
    assert all(torch.equal(vp[i], prompts.deep_image[i - 1]) for i in (1, 2))  # deeper: free image prompts
    for proj, image, text in zip(prompts.to_text, prompts.deep_image, prompts.deep_text):
        assert torch.allclose(text, proj(image))  # ... and the text prompts are made from them
    # the official code clones one initialised coupling
    assert torch.equal(prompts.to_text[0].weight, prompts.to_text[1].weight)
    trainable = {n for n, p in prompts.named_parameters() if p.requires_grad}
    assert trainable == {"ctx", "deep_image", "to_image.weight", "to_image.bias", "to_text.0.weight",
                         "to_text.0.bias", "to_text.1.weight", "to_text.1.bias"}


def test_the_objective_is_the_official_one():
    g = torch.Generator().manual_seed(0)
    clean, adv = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    fc, fa = F.normalize(torch.randn(5, 8, generator=g), dim=-1), F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    y = torch.tensor([0, 1, 2, 3, 0])
    p, q = clean.softmax(1), adv.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1)  # KL(p_clean || p_adv), per image
    expected = F.cross_entropy(clean, y) + 1.5 * (kl * ((fc * fa).sum(1) + 1)).mean()
    assert torch.allclose(fap_train.fap_loss(clean, adv, fc, fa, y), expected, atol=1e-6)
    # no adversarial gap, no adversarial term
    assert torch.allclose(fap_train.fap_loss(clean, clean, fc, fc, y), F.cross_entropy(clean, y), atol=1e-6)


def test_the_training_attack_stays_in_budget_and_moves_the_prediction(clf):
    prompts = fap.fresh_prompts(clf, torch.Generator().manual_seed(0))
    text = maple.learner(clf)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    eps = 8 / 255
    adv = fap_train.attack(clf, text, prompts, x, eps, eps, 2, torch.Generator().manual_seed(3))
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        clean = fap_train._forward(clf, text, prompts, x)[0]
        moved = fap_train.kl_per_image(fap_train._forward(clf, text, prompts, adv)[0], clean)
        noise = x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) * 2 - 1) * eps
        random = fap_train.kl_per_image(fap_train._forward(clf, text, prompts, noise.clamp(0, 1))[0], clean)
    assert moved.mean() > random.mean()
    assert all(p.grad is None for p in prompts.parameters())  # the attack leaves the prompts' gradients alone


def test_schedule_is_a_constant_warm_up_epoch_then_a_cosine():
    lrs = [fap_train.epoch_lr(e, 10, 0.0035) for e in range(10)]
    assert lrs[0] == 1e-5 and lrs[1] == pytest.approx(0.0035)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] > 0


def test_few_shot_pool_has_the_same_number_of_images_of_every_seen_class():
    images, labels = fap_train.few_shot(2, 0)
    assert images.shape == (2 * len(world.SEEN_CLASSES), 3, 128, 128)
    assert torch.equal(labels.bincount(), torch.full((len(world.SEEN_CLASSES),), 2))
    again, _ = fap_train.few_shot(2, 0)
    assert torch.equal(images, again)


def test_fap_classifies_with_its_prompts_in_one_differentiable_pass(clf):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    out = DEFENSES.create("fap")(clf, x, seed=0)
    plain = clf(x)
    assert out.logits.shape == plain.shape and not torch.allclose(out.logits, plain)
    module = DEFENSES.create("fap").as_module(clf)
    x.requires_grad_(True)
    logits = module(x)
    assert torch.allclose(logits, out.logits, atol=1e-5)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in fap.learned_prompts(clf).parameters())


def test_fap_runs_the_image_tower_in_the_classifiers_precision(clf, monkeypatch):
    """Where the classifier runs its image tower as a bf16 copy, FAP does too (it cost 2.26x a pass on
    ViT-B/32 in fp32); its answers stay those of the fp32 tower to bf16's precision."""
    from demo.models import classifier

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    fp32 = DEFENSES.create("fap")(clf, x, seed=0).logits
    towers = []
    monkeypatch.setattr(fap, "bf16_twin", lambda tower: towers.append(tower) or classifier.bf16_twin(tower))
    monkeypatch.setattr(clf, "precision", "bf16")
    bf16 = DEFENSES.create("fap")(clf, x, seed=0).logits
    assert towers == [clf.clip.visual] and bf16.dtype == torch.float32
    assert not torch.equal(bf16, fp32) and torch.allclose(bf16, fp32, atol=0.05 * fp32.abs().max().item())


def test_fap_needs_a_vit_and_its_prompts(clf, teaching_model):
    with pytest.raises(DefenseError, match="Vision Transformer"):
        DEFENSES.create("fap")(teaching_model.classifier(world.CLASSNAMES[:3]), torch.rand(1, 3, 128, 128), seed=0)
    bare = clf.__class__(clf.clip, clf.mean.flatten().tolist(), clf.std.flatten().tolist(), clf.text_features,
                         clf.classnames, clf.logit_scale)
    bare.model_key, bare.tokenizer = "nowhere", clf.tokenizer
    with pytest.raises(DefenseError, match="learned beforehand"):
        DEFENSES.create("fap")(bare, torch.rand(1, 3, 32, 32), seed=0)


def test_the_deviation_text_states_the_shipped_training_run():
    import json

    from demo.models import teaching

    meta = json.loads((teaching.VIT_DIR / "fap_prompts.json").read_text())
    text = DEFENSES.get("fap").deviation
    assert f"{meta['shots']} images of each seen" in text and f"{meta['epochs']} epochs" in text
    assert f"batch {meta['batch_size']}" in text and f"lr {meta['lr']:g}" in text
    assert f"at {meta['eps'] * 255:g}/255" in text and f"lambda {meta['lambda']:g}" in text
    assert meta["history"][-1]["epochs"] == meta["epochs"]  # the shipped prompts finished their schedule


def test_fap_class_features_are_computed_once_per_label_set_and_equal_fresh_ones(clf):
    prompts = fap.learned_prompts(clf)
    first = fap.Prompted(clf, prompts).text
    assert fap.Prompted(clf, prompts).text is first  # the second prediction reuses them
    with torch.no_grad():
        fresh = maple.text_features(maple.learner(clf), prompts)
    assert torch.allclose(first, fresh, atol=1e-6)
    other = fap.Prompted(load_model(clf.model_key, "cpu").classifier(["dog", "cat", "bus"]), prompts).text
    assert other.shape == first.shape and not torch.allclose(other, first)
    assert torch.allclose(other[0], first[1], atol=1e-5)  # "dog" is "dog" whichever list it is in



def test_the_learned_prompts_are_kept_per_device(clf):
    """As TAPT's: one copy per device; a classifier reporting the `meta` device stands in for a GPU one."""
    import types

    on_cpu = fap.learned_prompts(clf)
    elsewhere = types.SimpleNamespace(clip=clf.clip, tokenizer=clf.tokenizer, classnames=clf.classnames,
                                      model_key=clf.model_key, device=torch.device("meta"))
    on_meta = fap.learned_prompts(elsewhere)
    assert next(on_cpu.parameters()).device.type == "cpu" and next(on_meta.parameters()).device.type == "meta"
    assert fap.learned_prompts(clf) is on_cpu
