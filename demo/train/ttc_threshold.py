"""Calibrate TTC's tau threshold for the teaching model (`python -m demo.train ttc-threshold`).

TTC (Xing, Zhao & Sebe, CVPR 2025) counterattacks an input when tau, the relative move of its embedding
under random noise, is below tau_thres. The paper's 0.2 was chosen for OpenAI CLIP; tau's scale depends
on the model (here every tau is below 0.1), and counterattacking a clean image costs accuracy. The rule,
read like a detector's operating point: among the quantiles of clean tau on calibration images, take the
largest threshold at which TTC's clean accuracy stays within `max_drop` of the undefended model's. The
tau distributions of clean and PGD images are stored next to it, so anyone can see how well (or not)
tau separates them on this model. Calibration images come from seeds no evaluation or training uses.
"""
from __future__ import annotations

import json
import logging

import torch

from .. import world
from ..models import teaching
from ..models.loading import load_model
from ..registry import ATTACKS, DEFENSES

log = logging.getLogger(__name__)

CALIBRATION_SEED = 9000  # evaluation uses 5000+, training streams 10_000+
QUANTILES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _percentiles(t: torch.Tensor) -> dict[str, float]:
    return {f"p{int(q)}": round(float(torch.quantile(t, q / 100)), 5) for q in (5, 10, 25, 50, 75, 90, 95)}


def calibrate_ttc(n: int, max_drop: float, seed: int, out_path, eps: float = 4 / 255, model_key: str = "teaching") -> dict:
    import demo.attacks  # noqa: F401  (registers the attacks and defenses used here)
    import demo.defenses  # noqa: F401

    model = load_model(model_key, "cpu")
    clf = model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    images, labels, _ = world.make_batch(n, CALIBRATION_SEED + seed, teaching.IMAGE_SIZE, "seen")
    adv = ATTACKS.create("pgd", eps=eps, alpha=1 / 255, steps=10)(clf, images, labels, seed=seed).adv_images
    probe = DEFENSES.create("ttc", calibrated=False)
    tau_clean = probe.plan(clf, images, torch.Generator().manual_seed(seed)).tau
    tau_adv = probe.plan(clf, adv, torch.Generator().manual_seed(seed)).tau
    with torch.no_grad():
        base_acc = float((clf(images).argmax(1) == labels).float().mean())
    candidates = sorted({round(float(torch.quantile(tau_clean, q)), 5) for q in QUANTILES[:-1]} | {0.0})
    rows, chosen = [], 0.0
    for thr in candidates:
        ttc = DEFENSES.create("ttc", calibrated=False, tau_thres=thr)
        acc = float((ttc(clf, images, seed).logits.argmax(1) == labels).float().mean())
        row = {"tau_thres": thr, "clean_accuracy": round(acc, 4),
               "clean_counterattacked": round(float((tau_clean < thr).float().mean()), 4),
               "pgd_counterattacked": round(float((tau_adv < thr).float().mean()), 4)}
        rows.append(row)
        log.info("%s", row)
        if acc >= base_acc - max_drop:
            chosen = max(chosen, thr)
    result = {
        "tau_thres": chosen,
        "rule": (f"largest clean-tau quantile at which TTC's clean accuracy stays within {max_drop * 100:.0f} "
                 f"points of the undefended model's, on {n} calibration images"),
        "command": (f"python -m demo.train ttc-threshold --n {n} --max-drop {max_drop * 100:g} --seed {seed}"
                    + (f" --model {model_key}" if model_key != "teaching" else "")),
        "n": n, "seed": seed, "undefended_clean_accuracy": round(base_acc, 4),
        "tau_clean": _percentiles(tau_clean), "tau_pgd": _percentiles(tau_adv),
        "pgd": f"PGD-10, eps {eps * 255:.0f}/255, step 1/255", "candidates": rows,
    }
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
