"""Evaluation metrics on predictions and perturbations (all return plain floats for JSON).

Definitions used everywhere in the project (tables, the app, docs/results.md):

- accuracy: fraction of images whose prediction equals the label.
- robust accuracy: accuracy on the (uint8-quantized) adversarial images.
- untargeted attack success rate (ASR): among the images the model classifies correctly when clean,
  the fraction it misclassifies after the attack. Images already wrong when clean are not counted: an
  attack cannot be credited for them. Hence ASR = 1 - (#correct clean and adversarial) / (#correct clean);
  when no image becomes correct through the attack (the usual case), ASR = 1 - robust / clean.
- targeted ASR: among images whose label differs from the target, the fraction predicted as the target.
- perturbation norms: mean over images of ||adv - clean||_inf and ||adv - clean||_2, pixels in [0,1].
"""
from __future__ import annotations

import math

import torch


def _preds(x: torch.Tensor) -> torch.Tensor:
    return x.argmax(1) if x.ndim == 2 else x


def accuracy(logits_or_preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction correct; accepts (N, C) logits or (N,) predictions."""
    if labels.numel() == 0:
        return float("nan")
    return float((_preds(logits_or_preds).cpu() == labels.cpu()).float().mean())


def attack_success_rate(clean: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor) -> float:
    """Untargeted ASR over the clean-correct images (NaN when the model gets none right)."""
    clean_ok = _preds(clean).cpu() == labels.cpu()
    if not bool(clean_ok.any()):
        return float("nan")
    fooled = _preds(adv).cpu() != labels.cpu()
    return float(fooled[clean_ok].float().mean())


def targeted_success_rate(adv: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Fraction of images predicted as their target (images whose label is the target are left out)."""
    keep = torch.ones_like(target, dtype=torch.bool).cpu() if labels is None else (labels.cpu() != target.cpu())
    if not bool(keep.any()):
        return float("nan")
    return float((_preds(adv).cpu() == target.cpu())[keep].float().mean())


def linf_norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.detach().flatten(1).abs().amax(1).cpu()


def l2_norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.detach().flatten(1).norm(dim=1).cpu()


def mean_linf(delta: torch.Tensor) -> float:
    return float(linf_norms(delta).mean()) if delta.shape[0] else float("nan")


def mean_l2(delta: torch.Tensor) -> float:
    return float(l2_norms(delta).mean()) if delta.shape[0] else float("nan")


def worst_case_accuracy(logits_per_attack: list[torch.Tensor], labels: torch.Tensor) -> float:
    """Fraction of images classified correctly under every attack (the per-image worst case, as
    AutoAttack and RobustBench count robustness)."""
    if labels.numel() == 0:
        return float("nan")
    ok = torch.ones_like(labels.cpu(), dtype=torch.bool)
    for logits in logits_per_attack:
        ok &= _preds(logits).cpu() == labels.cpu()
    return float(ok.float().mean())


def significantly_above(a: float, b: float, n: int) -> bool:
    """Whether accuracy a is above b beyond the noise of n images (their 95% Wilson intervals are apart)."""
    return wilson_interval(a, n)[0] > wilson_interval(b, n)[1]


def wilson_interval(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion p observed on n trials (Wilson, 1927): unlike the
    normal approximation it stays inside [0, 1] and is sensible at p = 0 or 1 and small n."""
    if n <= 0 or p is None or (isinstance(p, float) and math.isnan(p)):
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt_ci(p: float | None, n: int) -> str:
    """'7.6% [5.6, 10.2]': the accuracy and its 95% Wilson interval, in percent."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    lo, hi = wilson_interval(p, n)
    return f"{100 * p:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def mcnemar_exact(a_right, b_right) -> tuple[int, int, float]:
    """McNemar's exact test for two classifiers scored on the same images (McNemar, Psychometrika 1947):
    b = images only A gets right, c = images only B gets right; under the null each discordant image is a
    fair coin, so the two-sided p-value is the binomial tail 2 * P[X <= min(b, c)], X ~ Bin(b + c, 1/2),
    capped at 1. Returns (b, c, p). Pairing removes the images both get right or both get wrong, which is
    why it can separate two rows whose separate Wilson intervals overlap."""
    a, b_ = [bool(v) for v in a_right], [bool(v) for v in b_right]
    if len(a) != len(b_):
        raise ValueError(f"paired test needs the same images: {len(a)} vs {len(b_)} results")
    only_a = sum(x and not y for x, y in zip(a, b_))
    only_b = sum(y and not x for x, y in zip(a, b_))
    m = only_a + only_b
    if m == 0:
        return only_a, only_b, 1.0
    tail = sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m
    return only_a, only_b, min(1.0, 2 * tail)


def paired_verdict(a_right, b_right, level: float = 0.05) -> str:
    """'helps', 'no better than' or 'worse': row A against row B on the same images, by McNemar's exact
    test at `level` (two-sided)."""
    only_a, only_b, p = mcnemar_exact(a_right, b_right)
    if p >= level:
        return "no better than"
    return "helps" if only_a > only_b else "worse"
