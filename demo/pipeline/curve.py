"""Robustness curve for one image: how the prediction holds up as the attack budget grows.

For each eps the attack is rerun; the undefended model and each chosen defense are scored on the
result (oblivious), or each defense on its own attack through it (adaptive). For one image "accuracy"
is 0 or 1, so the true label's probability is recorded too: it shows the slide before the flip.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from ..attacks.base import quantize, show
from ..defenses.base import Paradigm
from ..models.loading import LoadedModel
from .compare import ProgressFn, _Progress, check_image, check_request
from . import budget
from .inputs import InputError, make_attack

MAX_CURVE_POINTS = 12
UNDEFENDED = "Undefended"


@dataclass
class CurvePoint:
    eps: float
    correct: bool
    true_prob: float
    prediction: str


@dataclass
class CurveResult:
    labels: list[str]
    true_label: int
    attack: str
    adaptive: bool
    eps: list[float]                                   # pixel units
    series: dict[str, list[CurvePoint]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "labels": self.labels, "true_label": self.labels[self.true_label], "attack": self.attack,
            "adaptive": self.adaptive, "eps_255": [round(e * 255, 4) for e in self.eps],
            "series": {name: [{"eps_255": round(p.eps * 255, 4), "correct": p.correct,
                               "true_label_probability": round(p.true_prob, 6), "prediction": p.prediction}
                              for p in points] for name, points in self.series.items()},
        }


def check_eps_values(eps_values: Sequence[float]) -> list[float]:
    """Sorted, distinct and not too many; each budget's range is checked when its attack is built."""
    values = sorted({float(e) for e in eps_values})
    if not values:
        raise InputError("Give at least one eps value for the curve.")
    if len(values) > MAX_CURVE_POINTS:
        raise InputError(f"{len(values)} eps values is too many for one curve; use at most {MAX_CURVE_POINTS}.")
    return values


def robustness_curve(
    loaded: LoadedModel,
    image: torch.Tensor,
    labels: list[str],
    true_label: int | None,
    attack_name: str,
    attack_params: dict,
    eps_values: Sequence[float],
    defenses: Mapping[Paradigm | str, tuple[str, dict]] | None = None,
    adaptive: bool = False,
    target: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> CurveResult:
    """Undefended vs each chosen (non-"none") defense, at every eps in `eps_values` (pixel units)."""
    params = {k: v for k, v in (attack_params or {}).items() if k != "eps"}
    labels, true_label, target, attack, defense_objs = check_request(
        labels, true_label, target, attack_name, params, defenses)
    eps_field = next((f for f in attack.params() if f.name == "eps"), None)
    if eps_field is None:
        raise InputError(f"{attack.title or attack_name} has no eps budget to sweep; pick an eps-bounded attack.")
    eps_values = check_eps_values(eps_values)
    # Each budget gets the attack the page and `demo.eval` would build for it: the step follows each
    # budget (2.5 * eps / steps) unless a step is given.
    sized = {eps: make_attack(attack_name, {**params, "eps": eps}) for eps in eps_values}
    image = check_image(image).to(loaded.device)
    defended = [d for d in defense_objs.values() if d.name != "none"]
    per_eps = budget.comparison_passes(attack, defended, adaptive)
    more = budget.advice(attack, defended, adaptive) + [f"fewer eps values (now {len(eps_values)})"]
    budget.check(loaded, len(eps_values) * per_eps, more)
    clf = loaded.classifier(labels)
    chosen = [(p, d) for p, d in defense_objs.items() if d.name != "none"]
    if true_label is None:
        with torch.no_grad():
            true_label = int(clf(image).argmax(-1))
    if target is not None and target == true_label:
        raise InputError("The target label is the true label; pick another target.")

    label_t = torch.tensor([true_label], device=image.device)
    target_t = None if target is None else torch.tensor([target], device=image.device)
    steps = float(getattr(attack, "steps", 1) or 1)
    per_eps = [steps + 0.5 * len(chosen)] if not adaptive else [steps * (1 + len(chosen))]
    tracker = _Progress(progress, per_eps * len(eps_values))
    result = CurveResult(labels, true_label, attack.name, bool(adaptive), eps_values,
                         {UNDEFENDED: [], **{(d.title or d.name): [] for _, d in chosen}})

    def point(eps: float, probs: torch.Tensor) -> CurvePoint:
        pred = int(probs.argmax())
        return CurvePoint(eps, pred == true_label, float(probs[true_label]), labels[pred])

    for eps in eps_values:
        report = tracker.stage(f"eps = {show(eps, eps_field)}")
        n_runs = 1 + (len(chosen) if adaptive else 0)

        def attack_through(model, k):
            if eps == 0:
                return image
            sub = None if report is None else (lambda f, d="", k=k: report((k + float(f)) / n_runs, d))
            return quantize(sized[eps](model, image, label_t, target=target_t, seed=seed, progress=sub).adv_images)

        adv = attack_through(clf, 0)
        with torch.no_grad():
            result.series[UNDEFENDED].append(point(eps, clf(adv).softmax(-1)[0]))
        for k, (_, defense) in enumerate(chosen, start=1):
            seen = attack_through(defense.as_module(clf, seed), k) if adaptive else adv
            out = defense(clf, seen, seed=seed)
            result.series[defense.title or defense.name].append(point(eps, out.logits.float().softmax(-1)[0]))
    tracker.finish()
    return result
