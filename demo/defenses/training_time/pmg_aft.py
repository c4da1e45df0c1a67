"""PMG-AFT: pre-trained-model-guided adversarial fine-tuning of the image tower.

Reference: Wang, Zhang, Yuan, Shan. "Pre-trained Model Guided Fine-Tuning for Zero-Shot Adversarial
Robustness". CVPR 2024. arXiv 2401.04350 (official code serendipity1122/Pre-trained-Model-Guided-Fine-
Tuning-for-Zero-Shot-Adversarial-Robustness).

TeCoA's loss plus two KL terms that pull the adversarial prediction towards the frozen pre-trained
model's prediction on the same adversarial image and towards the fine-tuned model's own clean
prediction, so the tower keeps more of what the pre-trained model knew (its zero-shot generalization).
No hub checkpoint exists, so only the teaching models have one (see twin.py for how it is trained).
"""
from __future__ import annotations

from ...registry import DEFENSES
from .twin import RobustTwinDefense


@DEFENSES.register("pmg_aft")
class PMGAFT(RobustTwinDefense):
    title = "PMG-AFT (adversarially fine-tuned, guided by the original model)"
    reference = ("Wang et al., Pre-trained Model Guided Fine-Tuning for Zero-Shot Adversarial Robustness, "
                 "CVPR 2024, arXiv 2401.04350")
    deviation = ("Teaching model only (no published checkpoint), trained with the budget of TeCoA and FARE here: "
                 "90 AdamW steps of 64 images at eps 4/255 with a 3-step inner PGD of 2/255 and no momentum "
                 "(paper: SGD for 10 epochs of TinyImageNet at eps 1/255 with 2 steps). The loss is the official "
                 "one: cosine logits, both KL terms summed over the batch with weight 1.")
