"""Transfer attacks: crafted on one model, answered by another (library function and `demo.eval --attack-model`)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from demo.eval.__main__ import main
from demo.models.loading import load_model
from demo.pipeline.inputs import InputError
from demo.pipeline.transfer import TransferError, run_transfer, source_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def other_model(local_clip, tiny_cfg):
    """A second tiny CLIP with another image tower width, same input size: a different model."""
    cfg = {**tiny_cfg, "vision_cfg": {**tiny_cfg["vision_cfg"], "width": 48}}
    return load_model(f"local-dir:{local_clip(cfg, 'tiny_other')}", "cpu")


@pytest.fixture(scope="module")
def bigger_model(local_clip, tiny_cfg):
    cfg = {**tiny_cfg, "vision_cfg": {**tiny_cfg["vision_cfg"], "image_size": 48}}
    return load_model(f"local-dir:{local_clip(cfg, 'tiny_48')}", "cpu")


def test_same_model_transfer_is_the_white_box_attack(tiny_model, tiny_images, tiny_labels):
    clf = tiny_model.classifier(tiny_labels)
    y = clf(tiny_images).argmax(1)
    res = run_transfer(tiny_model, tiny_model, tiny_images, tiny_labels, y, "pgd",
                       {"eps": 16 / 255, "alpha": 4 / 255, "steps": 5}, seed=1)
    assert torch.allclose(res.source_adv, res.target_adv)
    assert res.fooled_source == res.fooled_target
    assert float(res.attack.linf.max()) <= 16 / 255 + 1e-6
    direct = clf(res.adv_images).softmax(-1)
    assert torch.allclose(direct, res.target_adv, atol=1e-5)


def test_other_model_answers_with_its_own_weights(tiny_model, other_model, tiny_images, tiny_labels):
    y = torch.tensor([0, 1, 2])
    res = run_transfer(tiny_model, other_model, tiny_images, tiny_labels, y, "pgd",
                       {"eps": 16 / 255, "alpha": 4 / 255, "steps": 5}, seed=1)
    target = other_model.classifier(tiny_labels)
    with torch.no_grad():
        assert torch.allclose(target(res.adv_images).softmax(-1), res.target_adv, atol=1e-5)
        assert torch.allclose(tiny_model.classifier(tiny_labels)(res.adv_images).softmax(-1), res.source_adv, atol=1e-5)
    assert not torch.allclose(res.source_adv, res.target_adv)
    assert (res.source, res.target) == (tiny_model.key, other_model.key)


def test_input_sizes_must_match(tiny_model, bigger_model, tiny_labels):
    with pytest.raises(TransferError, match="same size"):
        source_classifier(tiny_model, bigger_model, tiny_labels)


def test_bad_input_is_refused(tiny_model, tiny_images, tiny_labels):
    with pytest.raises(InputError, match="true labels"):
        run_transfer(tiny_model, tiny_model, tiny_images, tiny_labels, [0, 1], "pgd")
    with pytest.raises(InputError, match="indices"):
        run_transfer(tiny_model, tiny_model, tiny_images, tiny_labels, [0, 1, 9], "pgd")


def _folder(tmp_path):
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for c in ("car", "cat", "dog"):
        (root / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()).save(root / c / f"{k}.png")
    return root


def test_eval_attack_model(tiny_dir, local_clip, tmp_path, tiny_cfg):
    other = local_clip({**tiny_cfg, "vision_cfg": {**tiny_cfg["vision_cfg"], "width": 48}}, "tiny_other_eval")
    base = ["--attack", "pgd", "--eps", "16", "--steps", "5", "--n", "9", "--data", str(_folder(tmp_path)),
            "--defenses", "jpeg", "--adaptive"]
    white = main(["--model", f"local-dir:{tiny_dir}", *base])
    same = main(["--model", f"local-dir:{tiny_dir}", "--attack-model", f"local-dir:{tiny_dir}", *base])
    assert same["per_image"] == white["per_image"]
    crossed = main(["--model", f"local-dir:{other}", "--attack-model", f"local-dir:{tiny_dir}", *base])
    assert crossed["attack"]["crafted_on"] == f"local-dir:{tiny_dir}"
    # The answers are the other model's: its clean predictions are its own, not the source's.
    own = main(["--model", f"local-dir:{other}", *base])
    assert crossed["per_image"]["clean_pred"] == own["per_image"]["clean_pred"]
    assert crossed["per_image"]["adv_pred"] != own["per_image"]["adv_pred"] or \
        crossed["undefended"]["mean_l2"] != own["undefended"]["mean_l2"]
