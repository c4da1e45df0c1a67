"""The bf16 image tower (a speed lever for real-size models on CPUs): same answers as fp32, and chosen only
where it was measured to pay."""
from __future__ import annotations

import pytest
import torch

from demo.attacks import ATTACKS
from demo.models.loading import ModelLoadError, load_model, precision_for

LABELS = ["cat", "dog", "car", "tree"]


def test_the_choice_of_precision(monkeypatch):
    cpu = torch.device("cpu")
    assert precision_for(128, cpu, "auto") == "fp32", "the teaching model's published numbers are fp32"
    assert precision_for(224, torch.device("cuda"), "auto") == "fp32"
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision_for(224, cpu, "auto") == ("bf16" if native else "fp32")
    assert precision_for(224, cpu, "fp32") == "fp32" and precision_for(32, cpu, "bf16") == "bf16"
    monkeypatch.setenv("DEMO_PRECISION", "half")
    with pytest.raises(ModelLoadError, match="DEMO_PRECISION"):
        precision_for(224, cpu)


def test_teaching_model_stays_fp32(teaching_model):
    assert teaching_model.precision == "fp32"
    assert teaching_model.classifier(LABELS).precision == "fp32"


def test_bf16_tower_gives_the_same_answers_and_attacks(tiny_dir):
    loaded = load_model(f"local-dir:{tiny_dir}", "cpu")
    fp32 = loaded.classifier(LABELS)
    bf16 = loaded.classifier(LABELS)
    bf16.precision = "bf16"
    x = torch.rand(16, 3, loaded.image_size, loaded.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = fp32.encode(x), bf16.encode(x)
    assert b.dtype == torch.float32
    assert float(torch.nn.functional.cosine_similarity(a, b).min()) > 0.99
    with torch.no_grad():
        assert torch.equal(fp32(x).argmax(1), bf16(x).argmax(1))
    # Gradients flow to the fp32 input through the bf16 copy, and the attack lands on the same images.
    y = fp32(x).argmax(1)
    pgd = ATTACKS.create("pgd", eps=8 / 255, alpha=2 / 255, steps=5)
    r32, r16 = pgd(fp32, x, y, seed=0), pgd(bf16, x, y, seed=0)
    with torch.no_grad():
        p32, p16 = fp32(r32.adv_images).argmax(1), fp32(r16.adv_images).argmax(1)
    assert float((p32 == p16).float().mean()) >= 0.8
    diff = (r32.adv_images - r16.adv_images).abs()
    assert float(diff.max()) <= 2 * 8 / 255 + 1e-6 and float(diff.mean()) < 4 / 255
    # Both keep the same budget (up to the 8-bit quantization of the unquantized random input).
    assert float((r16.adv_images - x).abs().max()) <= float((r32.adv_images - x).abs().max()) + 1e-6


def test_exact_float32_turns_tf32_off():
    from demo.models.loading import exact_float32

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as a GPU process may start
    try:
        exact_float32()
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
