"""The embedded teaching model: a small open_clip CLIP trained from scratch on the teaching world.

No CLIP weights can be downloaded offline and no package ships any, so the project trains its own
(`python -m demo.train clip`). It is a real open_clip `CLIP` (ModifiedResNet image tower, transformer
text tower) stored as an open_clip `local-dir:` folder, so it loads through the same code path as any
other checkpoint. Robust variants store only their image tower and share the text tower.
"""
from __future__ import annotations

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

# Robust image towers (visual state dicts) trained by `python -m demo.train tecoa|fare|pmg_aft`.
VISUAL_WEIGHTS = {
    "tecoa": TEACHING_DIR / "visual_tecoa.safetensors",
    "fare": TEACHING_DIR / "visual_fare.safetensors",
    "pmg_aft": TEACHING_DIR / "visual_pmg_aft.safetensors",
}
APT_PROMPT = TEACHING_DIR / "apt_prompt.safetensors"
# TTC's tau threshold for this model, from `python -m demo.train ttc-threshold`.
TTC_CALIBRATION = TEACHING_DIR / "ttc_calibration.json"
