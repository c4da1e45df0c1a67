"""Loading CLIPs through open_clip (hub ids, local folders, checkpoint files, the teaching model).

Every model goes through `open_clip.create_model_and_transforms`, so a checkpoint on disk and a hub id
share one code path. Loaded models are cached, frozen (no parameter requires grad) and never mutated:
requests only read them.
"""
from __future__ import annotations

import contextlib

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import open_clip
import torch
import torch.nn as nn
from PIL import Image
from torchvision.transforms import functional as TF

from .classifier import ZeroShotClassifier, build_text_features
from .hub import hub_cache, hub_files, missing_weights, offline, runs_quick_gelu, weights_cached
from .zoo import DEFAULT_OFFLINE, DEFAULT_ONLINE, ModelSpec, spec_for

log = logging.getLogger(__name__)

MODEL_ENV = "DEMO_MODEL"
DEFAULT_TEMPLATES = ("a photo of a {}.",)


class ModelLoadError(RuntimeError):
    """A model could not be built or its weights could not be read (missing, offline, corrupt)."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def exact_float32() -> None:
    """Keep CUDA matmuls and convolutions in full fp32 for this process.

    PyTorch lets cuDNN run fp32 convolutions in TF32 by default; on a GPU the ResNet teaching model's answers
    then drift from the published fp32 numbers that the page quotes beside them. CPUs are unaffected.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _indexed(device: torch.device) -> torch.device:
    """'cuda' as 'cuda:<current>': a model's tensors report the indexed form, so a cache keyed by the bare
    name would build a second copy when asked again with `model.device`."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    # weights_only refuses pickled code: checkpoints are data, never programs.
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("vision_encoder_state_dict", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


@dataclass
class LoadedModel:
    """A frozen open_clip CLIP plus what is needed to use it in [0,1] pixel space."""

    spec: ModelSpec
    clip: nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"
    load_seconds: float = 0.0
    precision: str = "fp32"  # of the image tower's matrix products (see `precision_for`)
    _text_cache: "OrderedDict[tuple, torch.Tensor]" = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def text_features(self, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        """(C, D) class embeddings, computed once per (labels, templates) and cached (LRU, 64 entries)."""
        key = (tuple(classnames), tuple(templates))
        with self._lock:
            if key in self._text_cache:
                self._text_cache.move_to_end(key)
                return self._text_cache[key]
        feats = build_text_features(self.clip, self.tokenizer, classnames, templates)
        with self._lock:
            self._text_cache[key] = feats
            while len(self._text_cache) > 64:
                self._text_cache.popitem(last=False)
        return feats

    def classifier(self, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> ZeroShotClassifier:
        clf = ZeroShotClassifier(
            self.clip, self.mean, self.std, self.text_features(classnames, templates), classnames,
            float(self.clip.logit_scale.detach().exp()), self.precision,
        )
        clf.model_key, clf.tokenizer, clf.templates = self.key, self.tokenizer, tuple(templates)
        return clf

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> (1, 3, S, S) float tensor in [0,1] at the model's resolution (no normalization)."""
        image = image.convert("RGB")
        if self.resize_mode == "squash":
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        else:
            image = TF.resize(image, self.image_size, interpolation=TF.InterpolationMode.BICUBIC)
            image = TF.center_crop(image, [self.image_size, self.image_size])
        return TF.to_tensor(image).unsqueeze(0).to(self.device)


class _RandomInitNote(logging.Filter):
    """Drops open_clip's notes about its own weights ("Model initialized randomly", which checkpoint of
    the folder it picked) in the thread building a model whose weights all come from named files
    afterwards, where they are false, and nowhere else: changing the root logger's level would silence
    every other thread's logging for the duration of the build."""

    NOTES = ("initialized randomly", "Multiple checkpoints found", "no CLIP weights found")

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(self.local, "quiet", False) and any(n in record.getMessage() for n in self.NOTES))

    @contextlib.contextmanager
    def quiet(self, on: bool):
        before = getattr(self.local, "quiet", False)
        self.local.quiet = on
        try:
            yield
        finally:
            self.local.quiet = before


_RANDOM_INIT_NOTE = _RandomInitNote()
logging.getLogger().addFilter(_RANDOM_INIT_NOTE)


def _load_borrowed_text(clip: nn.Module, spec: ModelSpec) -> None:
    """Everything but the image tower from `spec.text_weights`; the image tower must come from
    `spec.visual_weights`, so nothing is left at its random initialisation."""
    if not spec.visual_weights:
        raise ValueError("a model that borrows its text tower needs its own image-tower weights")
    if not Path(spec.text_weights).is_file():
        raise FileNotFoundError(f"text-tower weights not found: {spec.text_weights}")
    state = {k: v for k, v in _load_state_dict(spec.text_weights).items() if not k.startswith("visual.")}
    missing, unexpected = clip.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.startswith("visual.")]
    if left or unexpected:
        raise ValueError(f"text-tower weights do not fit: missing {left[:3]}, unexpected {unexpected[:3]}")


def _build(spec: ModelSpec, device: torch.device) -> LoadedModel:
    start = time.perf_counter()
    hub = hub_files(spec) if spec.text_weights is None else None
    refusal = missing_weights(spec, hub) if hub is not None and hub.config else None
    if refusal:
        raise ModelLoadError(f"could not load model {spec.key!r}: {refusal}")
    try:
        with _RANDOM_INIT_NOTE.quiet(spec.text_weights is not None):  # its "initialized randomly" is not true here
            # require_pretrained: a hub model whose weights did not load is refused, never served random.
            clip, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=spec.pretrained, device=device, load_weights=spec.text_weights is None,
                force_quick_gelu=runs_quick_gelu(spec), require_pretrained=hub is not None, cache_dir=hub_cache())
        tokenizer = open_clip.get_tokenizer(spec.arch, cache_dir=hub_cache())
        if spec.text_weights:
            _load_borrowed_text(clip, spec)
        if spec.visual_weights:
            if not Path(spec.visual_weights).is_file():
                raise FileNotFoundError(f"image-tower weights not found: {spec.visual_weights}")
            state = _load_state_dict(spec.visual_weights)
            state = {k[len("visual."):] if k.startswith("visual.") else k: v for k, v in state.items()}
            clip.visual.load_state_dict(state)
    except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/ValueError/OSError
        raise ModelLoadError(f"could not load model {spec.key!r} ({spec.arch}): {exc}") from exc
    clip.eval().requires_grad_(False)
    cfg = open_clip.get_model_preprocess_cfg(clip)
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    loaded = LoadedModel(
        spec, clip, tokenizer, int(size), tuple(cfg["mean"]), tuple(cfg["std"]),
        cfg.get("resize_mode", "shortest"), time.perf_counter() - start,
    )
    loaded.precision = precision_for(loaded.image_size, loaded.device)
    return loaded


PRECISIONS = ("auto", "fp32", "bf16")


def precision_for(image_size: int, device: torch.device, setting: str | None = None) -> str:
    """The image tower's matmul precision: $DEMO_PRECISION (auto, fp32 or bf16; default auto). auto means
    bf16 for real-size models (above the teaching model's 128 px) on a CPU whose oneDNN runs bf16 natively,
    where it halves ViT-B/32's time, and fp32 elsewhere: on a GPU fp32 is fast enough, and the teaching
    model's published numbers were measured in fp32."""
    setting = (setting or os.environ.get("DEMO_PRECISION", "auto")).strip().lower()
    if setting not in PRECISIONS:
        raise ModelLoadError(f"DEMO_PRECISION must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting != "auto":
        return setting
    native = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return "bf16" if device.type == "cpu" and image_size > 128 and native else "fp32"


_CACHE: dict[tuple[str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def _fresh_locks() -> None:
    """In a forked child (a ZeroGPU worker) only the forking thread lives on: a lock another thread held at
    that moment would stay held there for good. The caches stay valid (each change is one dict operation
    under the lock); a build that was under way in another thread is simply redone when the child needs it.
    The same holds for torch's OpenMP threads: once the parent has computed on several, the child's first
    parallel CPU op waits forever for threads it does not have, so the child computes on one (a ZeroGPU
    worker computes on the GPU)."""
    global _CACHE_LOCK
    _CACHE_LOCK = threading.Lock()
    _KEY_LOCKS.clear()
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_fresh_locks)


def load_model(name: str, device: torch.device | str | None = None) -> LoadedModel:
    """Build (once) and return the model `name` (zoo key or ad-hoc id, see `zoo.spec_for`).

    Raises:
        ValueError: the name is not a known key or a valid id.
        ModelLoadError: the weights could not be loaded (missing file, hub unreachable, bad checkpoint).
    """
    spec = spec_for(name)
    device = _indexed(torch.device(device) if device is not None else pick_device())
    key = (spec.key, str(device))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:  # one build per model even when several requests ask at once
        if key not in _CACHE:
            model = _build(spec, device)
            log.info("loaded %s in %.1fs", spec.key, model.load_seconds)
            with _CACHE_LOCK:
                _CACHE[key] = model
    return _CACHE[key]


_TOWERS: dict[tuple[str, str], nn.Module] = {}


def load_image_tower(name: str, device: torch.device | str | None = None) -> nn.Module:
    """The image tower of model `name` alone (built once, cached), for robust twins.

    A twin shares its base model's text tower, so its own text tower is never used: keeping only the
    image tower saves the text tower's memory per twin (~250 MB for ViT-B/32, ~500 MB for ViT-L/14).
    A model already loaded in full lends its tower instead of a second copy.

    Raises:
        ValueError, ModelLoadError: as `load_model`.
    """
    spec = spec_for(name)
    device = _indexed(torch.device(device) if device is not None else pick_device())
    key = (spec.key, str(device))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key].clip.visual
        if key in _TOWERS:
            return _TOWERS[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        if key not in _TOWERS:
            model = _build(spec, device)
            visual = model.clip.visual
            del model  # the rest of the CLIP (text tower, embeddings) is freed here
            log.info("loaded the image tower of %s", spec.key)
            with _CACHE_LOCK:
                _TOWERS[key] = visual
    return _TOWERS[key]


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the model hub answers a TCP connection within `timeout` seconds (never hangs)."""
    if offline():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(requested: str | None = None, device: torch.device | str | None = None) -> tuple[LoadedModel, str]:
    """Load the requested model (argument, else $DEMO_MODEL, else the online default), falling back to
    the offline teaching model when the hub cannot be reached or loading fails. Returns (model, status)."""
    name = requested or os.environ.get(MODEL_ENV) or DEFAULT_ONLINE
    spec = spec_for(name)
    if spec.online and not weights_cached(spec) and not hub_reachable():
        status = f"Model hub not reachable: using the offline teaching model instead of {spec.label}."
        log.warning(status)
        return load_model(DEFAULT_OFFLINE, device), status
    try:
        model = load_model(name, device)
        return model, f"Using {spec.label}."
    except ModelLoadError as exc:
        if spec.key == DEFAULT_OFFLINE:
            raise
        status = f"Could not load {spec.label} ({exc}); using the offline teaching model."
        log.warning(status)
        return load_model(DEFAULT_OFFLINE, device), status
