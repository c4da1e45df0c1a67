"""TeCoA: text-guided contrastive adversarial fine-tuning of the image tower.

Reference: Mao, Geng, Yang, Wang, Vondrick. "Understanding Zero-Shot Adversarial Robustness for
Large-Scale Models". ICLR 2023. arXiv 2212.07016. Published checkpoints: TeCoA4
(`hf-hub:chs20/TeCoA4-ViT-B-32-laion2B-s34B-b79K`, `hf-hub:chs20/tecoa4-clip`).
"""
from __future__ import annotations

from ...registry import DEFENSES
from .twin import RobustTwinDefense


@DEFENSES.register("tecoa")
class TeCoA(RobustTwinDefense):
    title = "TeCoA (adversarially fine-tuned, supervised)"
    reference = "Mao et al., Understanding Zero-Shot Adversarial Robustness for Large-Scale Models, ICLR 2023, arXiv 2212.07016"
