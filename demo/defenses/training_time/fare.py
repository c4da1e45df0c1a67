"""FARE: unsupervised adversarial fine-tuning of the image embedding.

Reference: Schlarmann, Singh, Croce, Hein. "Robust CLIP: Unsupervised Adversarial Fine-Tuning of
Vision Embeddings for Robust Large Vision-Language Models". ICML 2024. arXiv 2402.12336. Published
checkpoints: FARE4 and FARE2 (`hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K`, `hf-hub:chs20/fare2-clip`).
"""
from __future__ import annotations

from ...registry import DEFENSES
from .twin import RobustTwinDefense


@DEFENSES.register("fare")
class FARE(RobustTwinDefense):
    title = "FARE (adversarially fine-tuned, unsupervised)"
    reference = ("Schlarmann et al., Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision Embeddings "
                 "for Robust Large Vision-Language Models, ICML 2024, arXiv 2402.12336")
    deviation = ("FARE's recipe (RobustVLM, whose FARE4 checkpoints hub models use): AdamW at eps 4/255, "
                 "10-step PGD of 1/255 with momentum 0.9, for ViT-L/14 20k steps of 128 ImageNet images. "
                 "Teaching model: that recipe shortened to 90 AdamW steps of 64 images at eps 4/255 with a "
                 "3-step inner PGD of 2/255 and no momentum.")
