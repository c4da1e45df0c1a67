"""AutoAttack-style worst case: APGD-CE, then APGD-T on the images that survive it.

Reference: Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks". ICML 2020. arXiv 2003.01690. The pair and its settings are those of the
RobustVLM evaluation (Schlarmann et al., ICML 2024): AutoAttack `version='custom'` with
`attacks_to_run=['apgd-ce', 'apgd-t']`, 100 iterations each, 9 target classes, one restart.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import ATTACKS
from ._torchattacks import TorchAttack, run_torchattacks
from .base import param, quantize_in_budget


@ATTACKS.register("autoattack")
@dataclass
class AutoAttack(TorchAttack):
    """The evaluation-strength attack (Croce & Hein, ICML 2020, arXiv 2003.01690), as RobustVLM runs it:
    APGD-CE (cross-entropy, adaptive step, momentum) for `steps` iterations; then, on every image the
    model still classifies correctly after 8-bit quantization, APGD-T: the targeted DLR loss towards each
    of the `targets` most likely other classes in turn, `steps` iterations each. An image counts as
    robust only if it survives all of them (per-image worst case). Untargeted only. Costs up to
    (1 + targets) x steps gradient passes per image, which is why it is an evaluation attack and not the
    interactive default. Runs on torchattacks.APGD and torchattacks.APGDT."""

    title = "AutoAttack (APGD-CE + APGD-T)"
    norm = "linf"
    supports_targeted = False
    min_classes = 4
    min_classes_why = "APGD-T's targeted DLR loss compares the largest logit with the third and fourth"
    reference = ("Croce & Hein, Reliable evaluation of adversarial robustness with an ensemble of diverse "
                 "parameter-free attacks, ICML 2020, arXiv 2003.01690; settings of RobustVLM (ICML 2024)")

    eps: float = param(4 / 255, lo=0.0, hi=32 / 255, step=1 / 255, label="epsilon (L-inf budget)",
                       help="Largest change allowed per pixel and channel.", unit="/255")
    steps: int = param(100, lo=1, hi=1000, step=1, label="iterations per attack",
                       help="Iterations of APGD-CE and of each APGD-T target; the official value is 100.")
    targets: int = param(9, lo=1, hi=20, step=1, label="APGD-T target classes",
                         help="Most likely wrong classes attacked one after another; the official value is 9.")

    def n_targets(self, num_classes: int | None) -> int:
        return self.targets if num_classes is None else max(1, min(self.targets, num_classes - 1))

    def expected_calls(self) -> int:
        # an accuracy check and the start, then one call per iteration, for each attack; APGD-T runs only
        # on the survivors, so this is the upper bound a cost estimate needs
        return (self.steps + 2) * (1 + self.targets)

    def perturb(self, model, images, labels, target, generator, progress):
        n_t = self.n_targets(getattr(model, "num_classes", None))
        share = 1.0 / (1 + n_t)

        def part(lo: float, width: float):
            if progress is None:
                return None
            return lambda f, desc="": progress(lo + width * float(f), desc)

        def build_ce(ta, wrapped, seed):
            return ta.APGD(wrapped, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, seed=seed, loss="ce")

        def build_t(ta, wrapped, seed):
            atk = ta.APGDT(wrapped, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, seed=seed,
                           n_classes=n_t + 1)
            atk.n_target_classes = n_t
            return atk

        common = dict(name=self.title, min_classes=self.min_classes)
        adv, history = run_torchattacks(build_ce, model, images, labels, None, generator, part(0.0, share),
                                        expected_calls=self.steps + 2, **common)
        adv = quantize_in_budget(adv, images, self.eps, self.norm)
        for h in history:
            h["attack"] = "apgd-ce"
        labels = torch.as_tensor(labels, device=images.device).long().expand(images.shape[0])
        with torch.no_grad():
            alive = (model(adv).argmax(1) == labels).nonzero().squeeze(1)
        if alive.numel():
            # Survivors only, as AutoAttack does: a fooled image keeps the perturbation that fooled it.
            adv_t, hist_t = run_torchattacks(build_t, model, images[alive], labels[alive], None, generator,
                                             part(share, 1 - share), expected_calls=(self.steps + 2) * n_t, **common)
            adv_t = quantize_in_budget(adv_t, images[alive], self.eps, self.norm)
            with torch.no_grad():
                fooled = model(adv_t).argmax(1) != labels[alive]
            adv[alive[fooled]] = adv_t[fooled]
            start = len(history)
            history += [{**h, "step": start + h["step"], "attack": "apgd-t"} for h in hist_t]
        if progress is not None:
            progress(1.0, "done")
        return adv, history
