import time

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from demo.models import loading
from demo.models.loading import ModelLoadError, load_model, resolve_model
from demo.models.zoo import spec_for


def test_vit_b32_checkpoint_file_loads_through_the_same_path(tmp_path):
    """A ViT-B-32 checkpoint on disk goes through open_clip.create_model_and_transforms like a hub id."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit_b32.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(f"ViT-B-32={path}", "cpu")
    assert loaded.image_size == 224
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.clip.state_dict().items()):
        assert torch.equal(a, b), k
    clf = loaded.classifier(["cat", "dog"])
    with torch.no_grad():
        assert clf(torch.rand(1, 3, 224, 224)).shape == (1, 2)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="could not load"):
        load_model(f"ViT-B-32={tmp_path / 'nope.pt'}", "cpu")


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        spec_for("no-such-model")


def test_offline_fallback_is_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    model, status = resolve_model("vit-b-32", "cpu")
    assert model.key == "teaching"
    assert "offline teaching model" in status
    assert time.perf_counter() - start < 15


def test_unreachable_hub_never_hangs(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # closed port: refused at once
    start = time.perf_counter()
    assert loading.hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 3


def test_preprocess_gives_unnormalized_model_resolution(tiny_model):
    from PIL import Image

    img = Image.new("RGBA", (50, 80), (255, 0, 0, 128))
    x = tiny_model.preprocess(img)
    assert x.shape == (1, 3, 32, 32)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x[0, 0], torch.ones(32, 32))


def test_image_tower_alone_matches_the_full_model_and_keeps_no_text_tower(tiny_dir, tmp_path):
    """Robust twins are loaded as image towers only; the weights must be exactly the full model's."""
    import gc
    import shutil
    import weakref

    folder = tmp_path / "twin"
    shutil.copytree(tiny_dir, folder)  # a model id no other test has loaded in full
    built = []
    real_build = loading._build

    def spy(spec, device):
        model = real_build(spec, device)
        built.append(weakref.ref(model.clip))
        return model

    loading._build = spy
    try:
        tower = loading.load_image_tower(f"local-dir:{folder}", "cpu")
        again = loading.load_image_tower(f"local-dir:{folder}", "cpu")
    finally:
        loading._build = real_build
    assert again is tower and len(built) == 1  # built once, then cached
    gc.collect()
    assert built[0]() is None  # the CLIP around the tower (its text tower) was freed
    full = load_model(f"local-dir:{folder}", "cpu")
    for (k, a), (_, b) in zip(full.clip.visual.state_dict().items(), tower.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in tower.parameters())


def test_image_tower_of_a_model_loaded_in_full_is_shared(tiny_model, tiny_dir):
    assert loading.load_image_tower(f"local-dir:{tiny_dir}", "cpu") is tiny_model.clip.visual


def test_building_a_borrowing_model_silences_only_its_own_random_init_warning(caplog):
    """The false "initialized randomly" note is dropped in the building thread; other threads log as usual."""
    import logging
    import threading

    from demo.models.loading import _RANDOM_INIT_NOTE

    caplog.set_level(logging.WARNING)
    with _RANDOM_INIT_NOTE.quiet(True):
        logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
        logging.warning("Multiple checkpoints found in x: [a, b]. Using a.")
        logging.warning("something else")
        other = threading.Thread(target=logging.warning, args=("Model initialized randomly, elsewhere",))
        other.start()
        other.join()
    logging.warning("Model initialized randomly, after the build")
    said = [r.getMessage() for r in caplog.records]
    assert said == ["something else", "Model initialized randomly, elsewhere", "Model initialized randomly, after the build"]
    assert logging.getLogger().level != logging.ERROR


def test_a_bare_cuda_device_is_cached_under_its_index(monkeypatch):
    """'cuda' and 'cuda:0' are one device: a model asked for with either is built once."""
    from demo.models.loading import _indexed

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert _indexed(torch.device("cuda")) == torch.device("cuda", 0)
    assert _indexed(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert _indexed(torch.device("cpu")) == torch.device("cpu")
