"""The model zoo: which CLIPs the app offers, and which robust twins back the training-time defenses.

A twin is keyed by the name of the defense it backs. The teaching models' twins are the robust image
towers found in their folders (`teaching.TeachingModel.robust_towers`); hub models name their published
checkpoints here."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import teaching


@dataclass(frozen=True)
class ModelSpec:
    """How to build one CLIP with open_clip.

    Args:
        key: short id used by the CLI, the environment variable and the UI.
        label: human-readable name.
        arch: open_clip model name, or an `hf-hub:` / `local-dir:` id.
        pretrained: open_clip pretrained tag or local checkpoint file (None for schema ids).
        visual_weights: a visual-tower state dict loaded into `model.visual` after building (robust
            towers distributed as image-tower-only files, as RobustVLM does).
        text_weights: a checkpoint whose text tower and logit scale complete this model (a teaching model
            that borrows another's text tower; its own image tower is then `visual_weights`).
        base: key of the model whose text tower and tokenizer this one shares (robust twins).
        twins: defense name -> key of the robust twin (training-time defenses of this model).
        online: needs the model hub the first time (not cached locally).
    """

    key: str
    label: str
    arch: str
    pretrained: str | None = None
    visual_weights: str | None = None
    text_weights: str | None = None
    base: str | None = None
    twins: dict[str, str] = field(default_factory=dict)
    online: bool = True
    description: str = ""


_TEACH = f"local-dir:{teaching.TEACHING_DIR}"

ZOO: dict[str, ModelSpec] = {}


def _add(spec: ModelSpec) -> None:
    ZOO[spec.key] = spec


_TEACHING = teaching.MODELS["teaching"]
_add(ModelSpec("teaching", "Teaching model (offline, embedded)", _TEACH, online=False,
               twins={m: f"teaching-{m}" for m in _TEACHING.robust_towers()},
               description="A small CLIP trained from scratch on the procedural teaching world. It only knows that world."))
for _method, _tower in _TEACHING.robust_towers().items():
    _add(ModelSpec(f"teaching-{_method}", f"Teaching model, {_method} image tower", _TEACH, online=False,
                   base="teaching", visual_weights=str(_tower)))
_VIT = teaching.MODELS["teaching-vit"]
_VIT_FILES = {"arch": f"local-dir:{_VIT.folder}", "online": False, "text_weights": str(_VIT.text_weights)}
_add(ModelSpec("teaching-vit", "Teaching model, ViT image tower (offline, embedded)", visual_weights=str(_VIT.tower),
               twins={m: f"teaching-vit-{m}" for m in _VIT.robust_towers()}, **_VIT_FILES,
               description="The teaching model's text tower with a small Vision Transformer image tower, the "
                           "architecture of the CLIPs people use. It only knows the teaching world, and recognizes "
                           "its held-out colour-shape pairs poorly so far (see the README)."))
for _method, _tower in _VIT.robust_towers().items():
    _add(ModelSpec(f"teaching-vit-{_method}", f"Teaching ViT, {_method} image tower", base="teaching-vit",
                   visual_weights=str(_tower), **_VIT_FILES))
_add(ModelSpec("vit-b-32", "CLIP ViT-B/32 (LAION-2B)", "ViT-B-32", "laion2b_s34b_b79k",
               twins={"tecoa": "vit-b-32-tecoa4", "fare": "vit-b-32-fare4"}))
_add(ModelSpec("vit-b-32-tecoa4", "TeCoA4 ViT-B/32 (LAION-2B)", "hf-hub:chs20/TeCoA4-ViT-B-32-laion2B-s34B-b79K", base="vit-b-32"))
_add(ModelSpec("vit-b-32-fare4", "FARE4 ViT-B/32 (LAION-2B)", "hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", base="vit-b-32"))
_add(ModelSpec("vit-b-32-openai", "CLIP ViT-B/32 (OpenAI)", "ViT-B-32-quickgelu", "openai"))
_add(ModelSpec("vit-l-14-openai", "CLIP ViT-L/14 (OpenAI, GPU recommended)", "ViT-L-14-quickgelu", "openai",
               twins={"tecoa": "vit-l-14-tecoa4", "fare": "vit-l-14-fare2"}))
_add(ModelSpec("vit-l-14-tecoa4", "TeCoA4 ViT-L/14", "hf-hub:chs20/tecoa4-clip", base="vit-l-14-openai"))
_add(ModelSpec("vit-l-14-fare2", "FARE2 ViT-L/14", "hf-hub:chs20/fare2-clip", base="vit-l-14-openai"))

DEFAULT_ONLINE = "vit-b-32"
DEFAULT_OFFLINE = "teaching"


def spec_for(name: str) -> ModelSpec:
    """A zoo key, or an ad-hoc id: `hf-hub:org/repo`, `local-dir:/path`, a folder with an
    open_clip_config.json, or `ARCH=/path/to/checkpoint` (e.g. `ViT-B-32=/tmp/ckpt.safetensors`)."""
    if name in ZOO:
        return ZOO[name]
    if name.startswith(("hf-hub:", "local-dir:")):
        return ModelSpec(name, name, name, online=name.startswith("hf-hub:"))
    if "=" in name:
        arch, path = name.split("=", 1)
        return ModelSpec(name, f"{arch} ({Path(path).name})", arch, path, online=False)
    if Path(name).is_dir():
        return ModelSpec(name, Path(name).name, f"local-dir:{name}", online=False)
    raise ValueError(
        f"unknown model {name!r}: use one of {', '.join(ZOO)}, an hf-hub:/local-dir: id, a folder with "
        "open_clip_config.json, or ARCH=/path/to/checkpoint"
    )
