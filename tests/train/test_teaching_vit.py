"""The ViT teaching model borrows the ResNet model's text tower: training moves only its image tower, the
saved folder holds only that tower, and the zoo's loader puts the two back together."""
import json

import pytest
import torch
from safetensors.torch import load_file

from demo.models import teaching, zoo
from demo.models.loading import ModelLoadError, load_model
from demo.train.clip_pretrain import build_fresh, train_clip

SMALL = teaching.TeachingModel(
    "vit-test", teaching.VIT_DIR,
    {**teaching.VIT_MODEL_CFG, "vision_cfg": {**teaching.VIT_MODEL_CFG["vision_cfg"], "layers": 1, "width": 64}},
    tower=teaching.VIT_DIR / "visual.safetensors", text_weights=teaching.TEACHING_DIR / "open_clip_model.safetensors")


def test_locked_text_training_moves_only_the_image_tower(tmp_path):
    before, _ = build_fresh(0, SMALL)
    text_before = {k: v.clone() for k, v in before.state_dict().items() if not k.startswith("visual.")}
    train_clip(2, 8, 1e-3, 0, None, tmp_path, eval_every=100, which=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["open_clip_config.json", "training_clip.json",
                                                          "visual.safetensors"]
    config = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["layers"] == 1 and config["preprocess_cfg"]["size"] == 128

    spec = zoo.ModelSpec("vit-test", "test", f"local-dir:{tmp_path}", online=False,
                         visual_weights=str(tmp_path / "visual.safetensors"), text_weights=str(SMALL.text_weights))
    zoo.ZOO[spec.key] = spec
    try:
        loaded = load_model(spec.key, "cpu")
    finally:
        del zoo.ZOO[spec.key]
    state = loaded.clip.state_dict()
    for k, v in text_before.items():  # the text tower and the logit scale are the ResNet model's, unchanged
        assert torch.equal(state[k], v), k
    resnet = load_model("teaching", "cpu")
    labels = ["red circle", "blue star"]
    assert torch.allclose(loaded.text_features(labels), resnet.text_features(labels), atol=1e-6)
    # ... while the image tower is the trained one, not the random start
    trained = build_fresh(0, SMALL)[0]
    trained.visual.load_state_dict({k: v.float() for k, v in load_file(str(tmp_path / "visual.safetensors")).items()})
    assert torch.allclose(state["visual.conv1.weight"], trained.visual.conv1.weight, atol=1e-3)
    assert not torch.allclose(state["visual.conv1.weight"], before.visual.conv1.weight, atol=1e-3)


def test_a_borrowed_text_tower_needs_an_image_tower_of_its_own(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps(teaching.config(SMALL)))
    spec = zoo.ModelSpec("vit-test-bad", "test", f"local-dir:{tmp_path}", online=False,
                         text_weights=str(SMALL.text_weights))
    zoo.ZOO[spec.key] = spec
    try:
        with pytest.raises(ModelLoadError, match="image-tower weights"):
            load_model(spec.key, "cpu")
    finally:
        del zoo.ZOO[spec.key]


def test_distillation_targets_are_the_lending_models_outputs():
    from demo.train.clip_pretrain import _normalize
    from demo.train.distill import Distiller

    student, tokenizer = build_fresh(0, SMALL)
    with pytest.raises(ValueError, match="borrows"):
        Distiller(teaching.MODELS["teaching"], student, tokenizer, 1.0, 1.0)
    d = Distiller(SMALL, student, tokenizer, 1.0, 1.0)
    assert not d.teacher.training and not any(p.requires_grad for p in d.teacher.parameters())
    images = torch.rand(2, 3, 128, 128)
    resnet = load_model("teaching", "cpu")
    embedding, hint_map = d.targets(_normalize(images))
    with torch.no_grad():  # what the app's ResNet model computes for the same pixels
        assert torch.allclose(embedding, resnet.clip.encode_image(_normalize(images)), atol=1e-5)
    assert hint_map.shape == (2, 64, 256)  # the 8 x 8 grid of the ViT's 16-pixel patches
    emb, hint = d.encode(student.visual, _normalize(images))
    assert hint.shape == (2, 64, 64) and torch.allclose(emb, student.visual(_normalize(images)), atol=1e-5)
    loss = d.loss(_normalize(images), emb, hint, torch.tensor(40.0))
    loss.backward()
    assert d.regressor.weight.grad is not None and student.visual.conv1.weight.grad is not None


def test_the_shipped_vit_teaching_model_and_its_twins():
    """`teaching-vit` loads from assets/ alone: a ViT image tower, the ResNet model's text tower, and
    robust twins that change only the image tower."""
    from demo.models.loading import load_image_tower

    vit, resnet = load_model("teaching-vit", "cpu"), load_model("teaching", "cpu")
    assert type(vit.clip.visual).__name__ == "VisionTransformer" and vit.image_size == resnet.image_size == 128
    labels = ["red circle", "blue star", "green moon"]
    assert torch.equal(vit.text_features(labels), resnet.text_features(labels))
    assert vit.clip.logit_scale.exp().item() == pytest.approx(resnet.clip.logit_scale.exp().item())
    base = vit.clip.visual.state_dict()
    for key in zoo.ZOO["teaching-vit"].twins.values():
        twin = load_image_tower(key, "cpu").state_dict()
        assert twin.keys() == base.keys() and any(not torch.equal(twin[k], base[k]) for k in base)


def test_factor_distillation_is_zero_only_when_the_student_answers_as_the_teacher():
    from demo.train.distill import _kl

    prompts = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    teacher = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    assert _kl(teacher, teacher, prompts, torch.tensor(40.0)).abs() < 1e-6
    other = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    assert _kl(other, teacher, prompts, torch.tensor(40.0)) > 0.01
    student, tokenizer = build_fresh(0, SMALL)
    with_factors = _distiller(student, tokenizer, factor_weight=1.0)
    without = _distiller(student, tokenizer, factor_weight=0.0)
    x, (emb, hint) = torch.rand(2, 3, 128, 128), (torch.randn(2, 128), torch.randn(2, 64, 64))
    assert with_factors.colours.shape == (8, 128) and with_factors.shapes.shape == (8, 128)
    assert with_factors.loss(x, emb, hint, torch.tensor(40.0)) > without.loss(x, emb, hint, torch.tensor(40.0))


def _distiller(student, tokenizer, factor_weight):
    from demo.train.distill import Distiller

    return Distiller(SMALL, student, tokenizer, 1.0, 0.0, factor_weight)

