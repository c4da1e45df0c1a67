"""Shared fixtures: a tiny random CLIP loaded through the real local-dir path, and the teaching model."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_PROXY", "localhost,127.0.0.1")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
TINY_LABELS = ["cat", "dog", "car", "tree"]


@pytest.fixture(scope="session")
def local_clip(tmp_path_factory):
    """local_clip(cfg, name) -> a folder in open_clip's local-dir format holding a random CLIP of that config."""
    import open_clip
    from safetensors.torch import save_file

    def make(cfg: dict, name: str):
        d = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        model = open_clip.CLIP(**cfg)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
        size = cfg["vision_cfg"]["image_size"]
        (d / "open_clip_config.json").write_text(json.dumps({
            "model_cfg": cfg,
            "preprocess_cfg": {"size": size, "mean": [0.48145466, 0.4578275, 0.40821073],
                               "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                               "resize_mode": "shortest"},
        }))
        return d

    return make


# A 4-layer ViT CLIP: the multi-modal prompts of TAPT and FAP need a ViT image tower.
TINY_VIT_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 4, "width": 32, "patch_size": 8, "head_width": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2}}
TINY_VIT_LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="session")
def tiny_vit(local_clip):
    """(a fresh classifier over TINY_VIT_LABELS, its model folder) for the tiny ViT CLIP saved under `name`."""
    from demo.models.loading import load_model

    def make(name: str):
        folder = local_clip(TINY_VIT_CFG, name)
        return load_model(f"local-dir:{folder}", "cpu").classifier(TINY_VIT_LABELS), folder

    return make


@pytest.fixture(scope="session")
def tiny_cfg():
    """The tiny CLIP config, for tests that build variants of it (a fixture: test modules cannot import conftest)."""
    return TINY_CFG


@pytest.fixture(scope="session")
def tiny_labels():
    return list(TINY_LABELS)


@pytest.fixture(scope="session")
def tiny_dir(local_clip):
    """A folder in open_clip's local-dir format holding a tiny, randomly initialised CLIP."""
    return local_clip(TINY_CFG, "tiny_clip")


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from demo.models.loading import load_model

    return load_model(f"local-dir:{tiny_dir}", "cpu")


@pytest.fixture()
def tiny_clf(tiny_model):
    return tiny_model.classifier(TINY_LABELS)


@pytest.fixture()
def tiny_images():
    g = torch.Generator().manual_seed(0)
    return torch.round(torch.rand(3, 3, 32, 32, generator=g) * 255) / 255


@pytest.fixture(scope="session")
def teaching_model():
    from demo.models.loading import load_model

    return load_model("teaching", "cpu")


@pytest.fixture(scope="session")
def world_batch():
    """A fixed small batch of seen-combination teaching-world images with labels."""
    from demo import world

    images, labels, _ = world.make_batch(64, seed=4242, image_size=128, split="seen")
    return images, labels


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: the suite shares 2 cores with other work, and one thread
    avoids oversubscription on tiny tensors. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tapt_assets(tiny_model, tmp_path_factory):
    """TAPT's starting prompts and statistics for the tiny model (untrained prompts; statistics of the
    prompted block inputs of random images), registered under the tiny model's key."""
    from safetensors.torch import save_file

    from demo.defenses.test_time import maple, tapt

    clf = tiny_model.classifier(TINY_LABELS)
    prompts = maple.fresh_prompts(clf, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        _, inputs = maple.encode_image(clf, torch.rand(16, 3, 32, 32, generator=g), prompts, prompts.depth - 1)
        mean, var = tapt.token_stats(inputs)
    d = tmp_path_factory.mktemp("tapt")
    save_file({k: v.contiguous() for k, v in prompts.state_dict().items()}, str(d / "prompts.safetensors"))
    save_file({"adv_mean": mean.clone(), "adv_var": var.clone(), "clean_mean": mean.clone() + 0.1,
               "clean_var": var.clone()}, str(d / "stats.safetensors"))
    tapt.ASSETS[tiny_model.key] = (d / "prompts.safetensors", d / "stats.safetensors")
    return prompts


@pytest.fixture(scope="session")
def fap_assets(tiny_model, tmp_path_factory):
    """FAP prompts for the tiny model (untrained), registered under the tiny model's key."""
    from safetensors.torch import save_file

    from demo.defenses.training_time import fap

    prompts = fap.fresh_prompts(tiny_model.classifier(TINY_LABELS), torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("fap") / "fap.safetensors"
    save_file({k: v.contiguous() for k, v in prompts.state_dict().items()}, str(path))
    fap.PROMPTS[tiny_model.key] = path
    return prompts
