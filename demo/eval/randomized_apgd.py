"""APGD with EOT for randomized defenses: the strong attack of the protocol (`demo.eval.randomized`).

Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv 2003.01690), as its `version='rand'` runs it on randomized
defenses: APGD-CE and APGD-DLR, each gradient averaged over `draws` fresh draws of the defense (EOT; the
official default is 20), one restart, 100 iterations. The step size starts at 2 eps and is halved at the
paper's checkpoints when too few steps raised the loss (fewer than 75% since the last checkpoint) or when
the best loss did not change, restarting from the best point; steps use momentum 0.75.

Deviations, said in the report: the best point is the iterate with the highest *expected* loss (the mean
over the step's draws), and it is returned for every image, fooled or not (the official code returns the
latest point at which any draw misclassified, else the last iterate); the random start is uniform in the
eps-ball. Images and budgets are in [0,1] pixel units.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (untargeted): -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3), scale invariant."""
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
    return -(z_y - others) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES = {"ce": lambda z, y: F.cross_entropy(z, y, reduction="none"), "dlr": dlr_loss}


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
    - 0.03, 0.06) as fractions of the iterations, counted in whole iterations (22, 41, 57, ... of 100)."""
    interval, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at = [], interval
    while at < steps:
        out.append(at)
        interval = max(interval - shrink, least)
        at += interval
    return out


def _expected(module, x, y, loss_fn, draws: int, grad: bool):
    x = x.detach().requires_grad_(grad)
    total, g = torch.zeros(x.shape[0], device=x.device), torch.zeros_like(x)
    for _ in range(draws):
        with torch.set_grad_enabled(grad):
            loss = loss_fn(module(x), y)
            if grad:
                g += torch.autograd.grad(loss.sum(), x)[0]
        total += loss.detach()
    return total / draws, g / draws


def eot_apgd(module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, draws: int,
             generator: torch.Generator, loss: str = "ce") -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """APGD on the expected `loss` ("ce" or "dlr"); returns (best images, their expected loss, the mean
    expected loss per iteration)."""
    loss_fn = LOSSES[loss]

    def proj(z):
        return torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1)

    shape = (-1,) + (1,) * (x.ndim - 1)
    adv = proj(x + (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps)
    f, g = _expected(module, adv, y, loss_fn, draws, grad=True)
    best, best_f, curve = adv.clone(), f.clone(), [float(f.sum())]
    eta = torch.full((x.shape[0],), 2 * eps, device=x.device)
    prev, rises, last_ck, best_at_ck, eta_at_ck = adv.clone(), torch.zeros_like(f), 0, best_f.clone(), eta.clone()
    marks = set(checkpoints(steps))
    for k in range(steps):
        z = proj(adv + eta.view(shape) * g.sign())
        nxt = z if k == 0 else proj(adv + 0.75 * (z - adv) + 0.25 * (adv - prev))
        prev, adv = adv, nxt
        f_new, g_new = _expected(module, adv, y, loss_fn, draws, grad=k < steps - 1)
        rises += (f_new > f).float()
        f, g = f_new, g_new
        better = f > best_f
        best[better], best_f[better] = adv[better], f[better]
        curve.append(float(f.sum()))
        if k + 1 in marks:
            few = rises < 0.75 * (k + 1 - last_ck)
            stuck = (eta == eta_at_ck) & (best_f == best_at_ck)
            halve = few | stuck
            eta_at_ck = eta.clone()
            eta[halve] /= 2
            adv[halve], prev[halve] = best[halve], best[halve]  # restart from the best point
            if bool(halve.any()) and k < steps - 1:
                f_b, g_b = _expected(module, adv, y, loss_fn, draws, grad=True)
                f, g = torch.where(halve, f_b, f), torch.where(halve.view(shape), g_b, g)
            rises.zero_()
            last_ck, best_at_ck = k + 1, best_f.clone()
    return best, best_f, curve
