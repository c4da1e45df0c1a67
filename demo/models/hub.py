"""Facts about hub models: which files of which repository hold a model, whether they are already in the
local Hugging Face cache, and what a robust twin's towers run. No network unless a download is asked for."""
from __future__ import annotations

import os
from dataclasses import dataclass

import open_clip
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from .zoo import ZOO, ModelSpec

@dataclass(frozen=True)
class HubFiles:
    """Where a hub model's files are: its repository, the weight files open_clip takes from it (the first
    one present), and whether the repository also holds the model's config (`hf-hub:` ids)."""

    repo: str
    weights: tuple[str, ...]
    config: bool


def hub_cache() -> str | None:
    """$HF_HUB_CACHE as it is now (huggingface_hub reads it once, at import), else the library's default."""
    return os.environ.get("HF_HUB_CACHE") or None


def hub_files(spec: ModelSpec) -> HubFiles | None:
    """The hub files of `spec`, or None when its weights are not on the model hub."""
    if spec.arch.startswith("hf-hub:"):
        return HubFiles(spec.arch[len("hf-hub:"):], (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME), True)
    try:
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained) if spec.pretrained else {}
    except Exception:
        cfg = {}
    repo, name = os.path.split(cfg.get("hf_hub") or "")
    if not repo:
        return None
    # open_clip's own order: a safetensors twin of the named file first (open_clip.pretrained).
    names = (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME) if name in ("", HF_WEIGHTS_NAME) else \
        ((name[:-4] + ".safetensors", name) if name.endswith((".bin", ".pth")) else (name,))
    return HubFiles(repo, names, False)


def _in_cache(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo, filename, cache_dir=hub_cache())
    except Exception:  # a malformed repository id or cache folder: not cached
        return False
    return isinstance(path, str) and os.path.isfile(path)


def weights_cached(spec: ModelSpec) -> bool:
    """Whether the hub weights of `spec` (and its config, for an `hf-hub:` repository) are already in the
    local Hugging Face cache, so it loads without a network. A repository cached without its weights
    file is not: it would otherwise pass for a model."""
    hub = hub_files(spec)
    if hub is None:
        return False
    return (not hub.config or _in_cache(hub.repo, HF_CONFIG_NAME)) and any(_in_cache(hub.repo, w) for w in hub.weights)


def missing_weights(spec: ModelSpec, hub: HubFiles) -> str | None:
    """Why an `hf-hub:` repository cannot be used, when it has no weights file (cached, or downloaded now
    when the hub is reachable); None when it has one. open_clip would only log that it found none and
    initialise the model at random."""
    if any(_in_cache(hub.repo, w) for w in hub.weights):
        return None
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        download_pretrained_from_hf(hub.repo, cache_dir=hub_cache())  # safetensors first, then .bin
    except Exception:
        where = "in the local cache (the hub is offline)" if offline() else "on the hub or in the local cache"
        return (f"the hub repository {hub.repo} has no weights file {where}: {' or '.join(hub.weights)} is "
                "missing, and a model without its weights would answer at random")
    return None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def runs_quick_gelu(spec: ModelSpec) -> bool:
    """Whether `spec`'s towers run QuickGELU: a robust twin runs its base model's activation, which a
    repository's config may not say (a ViT-L/14 twin of OpenAI's CLIP fine-tuned from its QuickGELU
    weights, with `quick_gelu` missing from its open_clip_config.json, would otherwise run GELU)."""
    base = ZOO.get(spec.base) if spec.base else None
    if base is None:
        return False
    if base.arch.endswith("-quickgelu"):
        return True
    try:
        cfg = open_clip.get_pretrained_cfg(base.arch, base.pretrained) if base.pretrained else {}
    except Exception:
        cfg = {}
    return bool(cfg.get("quick_gelu"))
