"""The embedded teaching model: a small open_clip CLIP trained from scratch on the teaching world.

No CLIP weights can be downloaded offline and no package ships any, so the project trains its own
(`python -m demo.train clip`). It is a real open_clip `CLIP` (ModifiedResNet image tower, transformer
text tower) stored as an open_clip `local-dir:` folder, so it loads through the same code path as any
other checkpoint. Robust variants store only their image tower and share the text tower.

A second teaching model, `teaching-vit`, has a VisionTransformer image tower (the architecture of the
CLIPs people use) and the very same text tower: it is trained against the ResNet model's frozen text
tower (`python -m demo.train clip --model teaching-vit`), so the two differ only in how they see, and
its folder stores image towers only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TEACHING_DIR = ASSETS / "teaching"
IMAGE_SIZE = 128

# CLIP's own normalization constants: the teaching model is trained with them so that every model
# in the zoo shares one preprocessing convention.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 16},
    # A short context is enough for the world's captions and keeps the text tower cheap; the
    # tokenizer truncates longer user labels to this length.
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 3},
}

PREPROCESS_CFG = {
    "size": IMAGE_SIZE,
    "mode": "RGB",
    "mean": list(MEAN),
    "std": list(STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}

APT_PROMPT = TEACHING_DIR / "apt_prompt.safetensors"
# TTC's tau threshold for this model, from `python -m demo.train ttc-threshold`.
TTC_CALIBRATION = TEACHING_DIR / "ttc_calibration.json"


# The ViT teaching model: patch 16 at 128 px (8 x 8 tokens plus the class token), 6 blocks of width 192
# with 64-wide heads (2.85M parameters, 5.7 MB in fp16). Measured training steps (batch 128, one thread,
# the other core busy): 4 x 192 1.6 s, 6 x 192 2.4 s, 8 x 192 3.0 s, 6 x 256 4.7 s; width 256 would
# also push the shipped towers past the assets' size budget.
VIT_DIR = ASSETS / "teaching_vit"
VIT_MODEL_CFG = {
    "embed_dim": MODEL_CFG["embed_dim"],
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 6, "width": 192, "patch_size": 16, "head_width": 64},
    "text_cfg": MODEL_CFG["text_cfg"],
}


@dataclass(frozen=True)
class TeachingModel:
    """Where one teaching model's files live. `text_weights` is set when the model borrows its text tower
    (and logit scale) from another checkpoint and `tower` holds its own image tower."""

    key: str
    folder: Path
    model_cfg: dict
    tower: Path | None = None
    text_weights: Path | None = None

    def visual_weights(self, method: str) -> Path:
        return self.folder / f"visual_{method}.safetensors"

    def robust_towers(self) -> dict[str, Path]:
        """Defense name -> robust image tower (a visual state dict), for every tower in the folder: each
        weight-trained defense's training command writes `visual_<name>.safetensors` here, so the shipped
        files say which robust twins a teaching model has."""
        prefix = "visual_"
        return {p.stem[len(prefix):]: p for p in sorted(self.folder.glob(f"{prefix}*.safetensors"))}

    @property
    def apt_prompt(self) -> Path:
        return self.folder / "apt_prompt.safetensors"

    @property
    def ttc_calibration(self) -> Path:
        return self.folder / "ttc_calibration.json"


MODELS = {
    "teaching": TeachingModel("teaching", TEACHING_DIR, MODEL_CFG),
    "teaching-vit": TeachingModel("teaching-vit", VIT_DIR, VIT_MODEL_CFG, tower=VIT_DIR / "visual.safetensors",
                                  text_weights=TEACHING_DIR / "open_clip_model.safetensors"),
}


def config(model: TeachingModel) -> dict:
    """The open_clip_config.json of a teaching model's folder."""
    from .. import world

    return {"model_cfg": model.model_cfg, "preprocess_cfg": PREPROCESS_CFG,
            "world": {"classnames": world.CLASSNAMES, "held_out": sorted(" ".join(p) for p in world.HELD_OUT),
                      "template": world.EVAL_TEMPLATE}}
