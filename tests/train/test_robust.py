"""The adversarial fine-tuning objectives, on tiny inputs, and the texts that describe the shipped runs."""
from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import demo.defenses  # noqa: F401  (registers every defense)
from demo.defenses import DEFENSES
from demo.models import teaching
from demo.train.robust import pmg_aft_loss


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, written out."""
    return (p * (p.log() - q.log())).sum(-1)


def test_pmg_aft_loss_is_ce_plus_two_kl_terms_towards_the_adversarial_prediction():
    g = torch.Generator().manual_seed(0)
    adv, clean, original = (torch.randn(4, 5, generator=g) * 2 for _ in range(3))
    y = torch.tensor([0, 3, 1, 4])
    loss, parts = pmg_aft_loss(adv, y, clean, original)
    p_adv, p_clean, p_orig = (t.softmax(-1) for t in (adv, clean, original))
    expected_guide = _kl(p_orig, p_adv).sum()  # summed over the batch, as the official KLDivLoss(reduction="sum")
    expected_clean = _kl(p_clean, p_adv).sum()
    ce = F.cross_entropy(adv, y)
    assert parts["kl_original"] == pytest.approx(float(expected_guide), rel=1e-5)
    assert parts["kl_clean"] == pytest.approx(float(expected_clean), rel=1e-5)
    assert float(loss) == pytest.approx(float(ce + expected_guide + expected_clean), rel=1e-5)


def test_pmg_aft_kl_terms_vanish_when_the_predictions_agree():
    adv = torch.tensor([[2.0, -1.0, 0.5]])
    loss, parts = pmg_aft_loss(adv, torch.tensor([0]), adv.clone(), adv.clone())
    assert parts["kl_original"] == pytest.approx(0.0, abs=1e-6) and parts["kl_clean"] == pytest.approx(0.0, abs=1e-6)
    assert float(loss) == pytest.approx(float(F.cross_entropy(adv, torch.tensor([0]))), rel=1e-6)


def test_pmg_aft_guidance_pulls_the_adversarial_prediction_towards_the_original_model():
    adv = torch.zeros(1, 3, requires_grad=True)
    original = torch.tensor([[0.0, 4.0, 0.0]])
    loss, _ = pmg_aft_loss(adv, torch.tensor([0]), adv.detach(), original)
    loss.backward()
    # gradient descent raises the logit the original model prefers (class 1) beyond what CE alone would
    ce_only = torch.zeros(1, 3, requires_grad=True)
    F.cross_entropy(ce_only, torch.tensor([0])).backward()
    assert adv.grad[0, 1] < ce_only.grad[0, 1]


@pytest.mark.parametrize("model", sorted(teaching.MODELS))
@pytest.mark.parametrize("defense,log", [("tecoa", "visual_tecoa.json"), ("fare", "visual_fare.json"),
                                         ("pmg_aft", "visual_pmg_aft.json"), ("apt", "apt_prompt.json")])
def test_deviation_texts_state_the_shipped_training_runs(defense, log, model):
    """A defense's deviation note names the number of training steps its shipped weights got, and the
    inner attack they were trained with: the numbers in the text are the ones in the training log (of
    both teaching models, which were trained the same way)."""
    meta = json.loads((teaching.MODELS[model].folder / log).read_text())
    text = DEFENSES.get(defense).deviation
    assert re.search(rf"\b{meta['steps']} AdamW steps of {meta['batch_size']} images", text), text
    assert f"eps {meta['eps'] * 255:.0f}/255" in text
    if "inner" in meta:
        steps, alpha = re.match(r"inner PGD: (\d+) steps of ([\d.]+)/255", meta["inner"]).groups()
        assert f"{steps}-step inner PGD of {float(alpha):g}/255" in text
        assert "no momentum" in text  # the project's inner PGD has none (RobustVLM's has 0.9)


def _finetune_once(tmp_path, monkeypatch, shape_hues: float, **terms) -> dict:
    from demo.train import robust

    monkeypatch.setattr(robust, "_evaluate", lambda *a, **k: {"step": 1})  # the zero-shot evaluation is not under test
    out = tmp_path / f"tower_{shape_hues}_{'_'.join(f'{k}{v}' for k, v in sorted(terms.items()))}.safetensors"
    robust.train_robust("finetune", 1, 4, 1e-3, 4 / 255, 0, 0.0, 0, None, out, eval_every=1,
                        shape_hues=shape_hues, hue_batch=4, **terms)
    return load_file(str(out)), json.loads(out.with_suffix(".json").read_text())


def test_the_off_palette_shape_term_changes_the_fine_tuning_step(tmp_path, monkeypatch):
    plain, plain_meta = _finetune_once(tmp_path, monkeypatch, 0.0)
    hued, meta = _finetune_once(tmp_path, monkeypatch, 1.0)
    assert meta["shape_hues"] == 1.0 and meta["hue_batch"] == 4 and "shape_hues" not in plain_meta
    # same seed and the same world batch: only the extra term can make the two steps differ
    assert any(not torch.equal(plain[k], hued[k]) for k in plain)


@pytest.mark.parametrize("terms,logged", [({"palette_shapes": 1.0}, "palette_shapes"),
                                          ({"embed_kd": 1.0}, "embed_kd"),
                                          ({"hue_saturation": 0.0}, "hue_saturation")])
def test_each_extra_fine_tuning_term_changes_the_step_and_is_logged(tmp_path, monkeypatch, terms, logged):
    model = "teaching-vit" if "embed_kd" in terms else "teaching"  # distillation needs the ResNet as lender
    base, base_meta = _finetune_once(tmp_path, monkeypatch, 1.0, model=model)
    tower, meta = _finetune_once(tmp_path, monkeypatch, 1.0, model=model, **terms)
    assert meta[logged] == next(iter(terms.values())) and logged not in base_meta
    assert any(not torch.equal(base[k], tower[k]) for k in base)


def test_the_off_palette_shape_term_belongs_to_clean_fine_tuning_only(tmp_path):
    from demo.train import robust

    with pytest.raises(ValueError, match="clean fine-tuning"):
        robust.train_robust("tecoa", 1, 4, 1e-3, 4 / 255, 1, 1 / 255, 0, None, tmp_path / "x.safetensors", 1,
                            shape_hues=1.0)
    with pytest.raises(ValueError, match="no lender"):
        robust.train_robust("finetune", 1, 4, 1e-3, 4 / 255, 0, 0.0, 0, None, tmp_path / "x.safetensors", 1,
                            embed_kd=1.0)
    for term in ("palette_shapes", "embed_kd"):
        with pytest.raises(ValueError, match="clean fine-tuning"):
            robust.train_robust("fare", 1, 4, 1e-3, 4 / 255, 1, 1 / 255, 0, None, tmp_path / "x.safetensors", 1,
                                **{term: 1.0})


def test_fine_tuning_can_continue_from_an_earlier_tower(tmp_path, monkeypatch):
    from demo.models.loading import load_model
    from demo.train import robust
    from demo.train.common import save_half

    monkeypatch.setattr(robust, "_evaluate", lambda *a, **k: {"step": 1})
    shipped = {k: v.detach().clone() for k, v in load_model("teaching").clip.visual.state_dict().items()}
    earlier = {k: v + 0.01 if v.is_floating_point() else v for k, v in shipped.items()}
    save_half(earlier, tmp_path / "earlier.safetensors", {})
    out = tmp_path / "continued.safetensors"
    # lr 0: the one step moves nothing, so the saved tower is the one the run started from
    robust.train_robust("finetune", 1, 4, 0.0, 4 / 255, 0, 0.0, 0, None, out, eval_every=1,
                        init=tmp_path / "earlier.safetensors")
    continued = load_file(str(out))
    weight = next(k for k, v in shipped.items() if v.ndim == 4)  # the first convolution
    assert torch.equal(continued[weight], earlier[weight].half())
    assert not torch.equal(continued[weight], shipped[weight].half())
    assert json.loads(out.with_suffix(".json").read_text())["init"].endswith("earlier.safetensors")


@pytest.mark.parametrize("command, module, function", [
    ("clip", "clip_pretrain", "train_clip"), ("finetune", "robust", "finetune_teaching"),
    ("fare", "robust", "train_robust")])
def test_the_training_commands_pass_their_device_on(command, module, function, monkeypatch, tmp_path):
    """`--device cuda` reaches the training function (whose tensors then follow the model there); the
    default stays the CPU, where the shipped weights were trained."""
    import importlib

    from demo.train.__main__ import main

    target = importlib.import_module(f"demo.train.{module}")
    seen = []
    monkeypatch.setattr(target, function, lambda *a, **k: seen.append(k.get("device", a[-1])) or {})
    main([command, "--steps", "1", "--out", str(tmp_path / "out"), "--device", "cuda"])
    main([command, "--steps", "1", "--out", str(tmp_path / "out")])
    assert seen == ["cuda", "cpu"]


def test_the_apt_training_evaluation_reads_its_prompted_classifier():
    """`demo.train apt` evaluates its prompt through the zero-shot accuracy that every training command
    uses; that helper moves images to the classifier's device, which the prompted classifier must tell."""
    import torch.nn.functional as F

    from demo import world
    from demo.defenses.test_time.prompt_learner import PromptLearner
    from demo.defenses.training_time.apt import _APTClassifier
    from demo.defenses.training_time.twin import twin_visual
    from demo.models.loading import load_model
    from demo.train.common import zero_shot_accuracy

    clf = load_model("teaching").classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    learner = PromptLearner.for_classifier(clf)
    with torch.no_grad():
        text = F.normalize(learner.text_features(learner.init_context()), dim=-1)
    prompted = _APTClassifier(clf, twin_visual(clf, "tecoa"), text)
    assert prompted.device == clf.device
    assert 0.0 <= zero_shot_accuracy(prompted, 8, seed=1) <= 1.0
