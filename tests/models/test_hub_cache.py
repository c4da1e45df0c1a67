"""Hub models from a local Hugging Face cache: weights that are there load, a repository without them is
refused (never served random), and a robust twin runs its base model's activation. The cache is a small
fake one in tmp_path, read offline through $HF_HUB_CACHE; the models are tiny custom open_clip configs."""
import copy
import json

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from demo.models import loading
from demo.models.hub import weights_cached
from demo.models.loading import ModelLoadError, load_image_tower, load_model, resolve_model
from demo.models.zoo import spec_for

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PREPROCESS = {"size": 32, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
              "interpolation": "bicubic", "resize_mode": "shortest"}
TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
# Shaped like ViT-L/14 twins' open_clip_config.json, which may leave out `quick_gelu` (tiny sizes, for speed).
L14_STYLE = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """put(repo, files) writes a repository into a fresh cache in the layout huggingface_hub reads."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(loading.MODEL_ENV, raising=False)
    # Models built from this cache must not stay in the process-wide caches under real zoo keys.
    for name in ("_CACHE", "_TOWERS", "_KEY_LOCKS"):
        monkeypatch.setattr(loading, name, {})

    def put(repo: str, files: dict) -> None:
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(COMMIT)
        for name, write in files.items():
            write(snapshot / name)

    return put


def config(cfg: dict):
    return lambda path: path.write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": PREPROCESS}))


def weights(model: torch.nn.Module, fmt: str):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        return lambda path: save_file(state, str(path))
    return lambda path: torch.save(state, str(path))


def tiny_clip(cfg: dict = TINY_CFG, seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.CLIP(**copy.deepcopy(cfg))


@pytest.mark.parametrize("fmt,filename", [("safetensors", "open_clip_model.safetensors"),
                                          ("bin", "open_clip_pytorch_model.bin")])
def test_a_cached_repository_with_weights_loads_them(hub_cache, fmt, filename):
    model = tiny_clip()
    hub_cache("org/tiny", {"open_clip_config.json": config(TINY_CFG), filename: weights(model, fmt)})
    assert weights_cached(spec_for("hf-hub:org/tiny"))
    loaded = load_model("hf-hub:org/tiny", "cpu")
    for (key, a), (_, b) in zip(model.state_dict().items(), loaded.clip.state_dict().items()):
        assert torch.equal(a, b), key


def test_a_repository_with_config_and_no_weights_is_refused_by_name(hub_cache):
    hub_cache("org/config-only", {"open_clip_config.json": config(TINY_CFG)})
    assert not weights_cached(spec_for("hf-hub:org/config-only"))
    with pytest.raises(ModelLoadError, match=r"org/config-only has no weights file.*open_clip_model\.safetensors "
                                             r"or open_clip_pytorch_model\.bin is missing"):
        load_model("hf-hub:org/config-only", "cpu")
    with pytest.raises(ModelLoadError, match="org/config-only"):
        load_image_tower("hf-hub:org/config-only", "cpu")


def test_the_page_falls_back_from_a_repository_without_weights(hub_cache, monkeypatch):
    hub_cache("org/config-only", {"open_clip_config.json": config(TINY_CFG)})
    model, status = resolve_model("hf-hub:org/config-only", "cpu")  # not cached, hub offline
    assert model.key == "teaching" and "not reachable" in status
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: True)  # reached, and still no weights
    model, status = resolve_model("hf-hub:org/config-only", "cpu")
    assert model.key == "teaching"
    assert "org/config-only has no weights file" in status and "offline teaching model" in status


def test_only_weights_make_the_startup_model_cached(hub_cache):
    from demo.ui.models import startup_key

    vit = spec_for("vit-b-32")
    assert not weights_cached(vit) and startup_key() == "teaching"
    hub_cache("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", {"open_clip_config.json": config(TINY_CFG)})
    assert not weights_cached(vit) and startup_key() == "teaching"


def test_with_vit_b32_weights_cached_the_app_starts_on_it(hub_cache):
    from demo.ui.models import startup_key

    hub_cache("laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
              {"open_clip_config.json": config(TINY_CFG),
               "open_clip_model.safetensors": lambda path: path.write_bytes(b"stand-in")})
    assert weights_cached(spec_for("vit-b-32"))
    assert startup_key() == "vit-b-32"
    assert startup_key("teaching-vit") == "teaching-vit"  # the flag still wins


def test_an_l14_twin_without_quick_gelu_in_its_config_runs_quick_gelu(hub_cache):
    assert "quick_gelu" not in L14_STYLE
    model = tiny_clip(L14_STYLE)
    hub_cache("chs20/tecoa4-clip", {"open_clip_config.json": config(L14_STYLE),
                                    "open_clip_model.safetensors": weights(model, "safetensors")})
    twin = load_image_tower("vit-l-14-tecoa4", "cpu")  # the base, ViT-L-14-quickgelu, runs QuickGELU
    assert all(isinstance(block.mlp.gelu, QuickGELU) for block in twin.transformer.resblocks)
    alone = load_model("hf-hub:chs20/tecoa4-clip", "cpu")  # the same repository, no base: its config's GELU
    assert not any(isinstance(block.mlp.gelu, QuickGELU) for block in alone.clip.visual.transformer.resblocks)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(twin(x), alone.clip.visual(x))  # same weights, other activation
