"""One comparison: classify an image clean, attack it, and classify the attack through one defense per paradigm.

The five columns (clean, attacked, training-time, test-time, training-free) each record the image that
was classified, the top-5 predictions, whether the prediction is right, its cost in milliseconds and
model passes. Every request builds its own classifier view, attack and defenses and seeds its own
generators, so concurrent requests cannot see each other; the shared model is only read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from ..defenses.base import Paradigm
from ..models.loading import LoadedModel
from ..timing import Timings, count_passes, timer
from .inputs import InputError, check_index, check_labels, make_attack, make_defense

ProgressFn = Callable[[float, str], None]
PARADIGMS = (Paradigm.TRAINING_TIME, Paradigm.TEST_TIME, Paradigm.TRAINING_FREE)
COLUMN_KEYS = ("clean", "attacked") + tuple(p.value for p in PARADIGMS)
TOP_K = 5


@dataclass
class Stage:
    """One timed step of a run: milliseconds and encoder passes per image (grad = forward + backward)."""

    name: str
    ms: float
    forward: float = 0.0
    grad: float = 0.0


@dataclass
class Column:
    """One result panel: what was classified and what the model said about it."""

    key: str
    title: str
    image: torch.Tensor                 # (3, H, W) in [0,1]: exactly what the classifier saw
    probs: torch.Tensor                 # (C,) softmax probabilities
    labels: list[str]
    true_label: int
    defense: str | None = None
    received: torch.Tensor | None = None  # (3, H, W): the input before an input-changing defense
    changed: dict = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)  # what classifying this column cost
    attack_stage: Stage | None = None   # the adaptive attack made for this column, if any

    @property
    def pred(self) -> int:
        return int(self.probs.argmax())

    @property
    def pred_label(self) -> str:
        return self.labels[self.pred]

    @property
    def correct(self) -> bool:
        return self.pred == self.true_label

    @property
    def true_prob(self) -> float:
        return float(self.probs[self.true_label])

    @property
    def top(self) -> list[tuple[str, float]]:
        k = min(TOP_K, len(self.labels))
        values, idx = self.probs.topk(k)
        return [(self.labels[int(i)], float(v)) for v, i in zip(values, idx)]

    @property
    def ms(self) -> float:
        return sum(s.ms for s in self.stages)

    @property
    def passes(self) -> dict[str, float]:
        return {"forward": sum(s.forward for s in self.stages), "grad": sum(s.grad for s in self.stages)}

    @property
    def input_changed(self) -> bool:
        return self.received is not None


@dataclass
class ComparisonResult:
    labels: list[str]
    true_label: int
    model: str
    attack: str
    attack_params: dict
    target: int | None
    adaptive: bool
    seed: int
    clean: torch.Tensor          # (3, H, W)
    adversarial: torch.Tensor    # (3, H, W) uint8-quantized, exactly what the attacked column classified
    columns: list[Column]
    stages: list[Stage]

    @property
    def delta(self) -> torch.Tensor:
        return self.adversarial - self.clean

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    @property
    def attack_succeeded(self) -> bool:
        pred = self.column("attacked").pred
        return pred == self.target if self.target is not None else pred != self.true_label

    def to_dict(self) -> dict:
        """A JSON-ready summary (no tensors)."""
        delta = self.delta
        return {
            "model": self.model,
            "labels": self.labels,
            "true_label": self.labels[self.true_label],
            "attack": {"name": self.attack, "params": self.attack_params, "adaptive": self.adaptive,
                       "target": None if self.target is None else self.labels[self.target],
                       "succeeded": self.attack_succeeded,
                       "linf_255": round(float(delta.abs().max()) * 255, 4), "l2": round(float(delta.norm()), 6)},
            "seed": self.seed,
            "columns": [
                {"column": c.key, "title": c.title, "defense": c.defense, "prediction": c.pred_label,
                 "correct": c.correct, "true_label_probability": round(c.true_prob, 6),
                 "top5": [{"label": lab, "probability": round(p, 6)} for lab, p in c.top],
                 "ms": round(c.ms, 3), "passes": c.passes, "changed": _jsonable(c.changed),
                 "adaptive_attack": None if c.attack_stage is None else
                 {"ms": round(c.attack_stage.ms, 3), "forward_passes": c.attack_stage.forward,
                  "grad_passes": c.attack_stage.grad}}
                for c in self.columns
            ],
            "stages": [{"stage": s.name, "ms": round(s.ms, 3), "forward_passes": s.forward, "grad_passes": s.grad}
                       for s in self.stages],
        }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist()) if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (int, bool, str)) or value is None:
        return value
    return str(value)


class _Progress:
    """Maps each stage's own 0..1 progress onto its share of the whole run."""

    def __init__(self, callback: ProgressFn | None, weights: list[float]):
        self.callback, self.total = callback, max(sum(weights), 1e-9)
        self.weights, self.done, self.i = weights, 0.0, 0

    def stage(self, desc: str) -> ProgressFn | None:
        if self.callback is None:
            return None
        start, width = self.done / self.total, self.weights[self.i] / self.total
        self.done += self.weights[self.i]
        self.i += 1
        self.callback(start, desc)
        return lambda fraction, inner="": self.callback(start + width * min(max(float(fraction), 0.0), 1.0),
                                                        f"{desc}: {inner}" if inner else desc)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(1.0, "done")


def _classify(clf, images: torch.Tensor, name: str) -> tuple[torch.Tensor, Stage]:
    timings = Timings()
    with count_passes() as counter, timer(name, timings, images.device), torch.no_grad():
        logits = clf(images)
    n = images.shape[0]
    return logits.softmax(-1), Stage(name, timings.total, counter.forward / n, counter.grad / n)


def _stage(name: str, timings: Timings, passes: Mapping[str, float], whole: str) -> Stage:
    # The outer timer (`whole`) already spans any sub-stages a method reports; summing both would double count.
    ms = timings.ms.get(whole, timings.total)
    return Stage(name, ms, float(passes.get("forward", 0.0)), float(passes.get("grad", 0.0)))


def check_request(labels, true_label, target, attack_name, attack_params, defenses):
    """Validate everything before any model work, so bad input fails fast and with a clear message."""
    labels = check_labels(labels)
    true_label = check_index(true_label, labels, "true label")
    target = check_index(target, labels, "target label")
    if target is not None and true_label is not None and target == true_label:
        raise InputError(f"The target label {labels[target]!r} is the true label: a targeted attack must aim "
                         "at a different label (or leave the target empty for an untargeted attack).")
    attack = make_attack(attack_name, attack_params)
    if target is not None and not attack.supports_targeted:
        raise InputError(f"{attack.title or attack_name} has no targeted mode; leave the target empty or pick another attack.")
    if len(labels) < attack.min_classes:
        raise InputError(f"{attack.title or attack_name} needs at least {attack.min_classes} labels, got {len(labels)}.")
    built = {}
    for paradigm in PARADIGMS:
        name, params = (defenses or {}).get(paradigm, (defenses or {}).get(paradigm.value, ("none", {})))
        built[paradigm] = make_defense(paradigm, name, params)
    unknown = {str(k.value if isinstance(k, Paradigm) else k) for k in (defenses or {})} - {p.value for p in PARADIGMS}
    if unknown:
        raise InputError(f"Unknown paradigm(s) {', '.join(sorted(unknown))}; use {', '.join(p.value for p in PARADIGMS)}.")
    return labels, true_label, target, attack, built


def check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise InputError(f"The image must be a (1, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}.")
    if not torch.isfinite(image).all() or float(image.min()) < 0 or float(image.max()) > 1:
        raise InputError("The image values must lie in [0, 1].")
    # Uploads are 8-bit; putting the clean image on the uint8 grid makes the budget exact after quantization.
    return torch.round(image.detach().float() * 255.0) / 255.0


def run_comparison(
    loaded: LoadedModel,
    image: torch.Tensor,
    labels: list[str],
    true_label: int | None,
    attack_name: str,
    attack_params: dict,
    target: int | None = None,
    defenses: Mapping[Paradigm | str, tuple[str, dict]] | None = None,
    adaptive: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ComparisonResult:
    """Clean and attacked predictions plus one defense per paradigm, with costs.

    Oblivious (adaptive=False): one attack on the undefended model; every defense sees that image.
    Adaptive: each defense other than "none" gets its own attack through `defense.as_module` (BPDA/EOT
    where the defense is not differentiable or random) and is judged on that image.
    """
    labels, true_label, target, attack, defense_objs = check_request(
        labels, true_label, target, attack_name, attack_params, defenses)
    image = check_image(image).to(loaded.device)
    seed = int(seed)
    clf = loaded.classifier(labels)
    extra_attacks = [p for p in PARADIGMS if adaptive and defense_objs[p].name != "none"]
    steps = float(getattr(attack, "steps", 1) or 1)
    tracker = _Progress(progress, [0.2] + [steps] * (1 + len(extra_attacks)) + [0.5] * len(PARADIGMS))

    tracker.stage("clean prediction")
    probs, clean_stage = _classify(clf, image, "clean inference")
    if true_label is None:
        true_label = int(probs[0].argmax())
        if target == true_label:
            raise InputError(f"The target label {labels[target]!r} is what the model already predicts "
                             "for the clean image; pick another target.")
    stages = [clean_stage]
    columns = [Column("clean", "Clean", image[0], probs[0], labels, true_label, stages=[clean_stage])]

    label_t = torch.tensor([true_label], device=image.device)
    target_t = None if target is None else torch.tensor([target], device=image.device)
    title = attack.title or attack.name
    result = attack(clf, image, label_t, target=target_t, seed=seed, progress=tracker.stage(f"attack ({title})"))
    adv = result.adv_images
    attack_stage = _stage(f"attack: {title}", result.timings, result.passes, "attack")
    adv_probs, adv_stage = _classify(clf, adv, "attacked inference")
    stages += [attack_stage, adv_stage]
    columns.append(Column("attacked", f"Attacked ({title})", adv[0], adv_probs[0], labels, true_label,
                          stages=[adv_stage]))

    adaptive_inputs = {}
    for paradigm in extra_attacks:
        defense = defense_objs[paradigm]
        name = defense.title or defense.name
        module = defense.as_module(clf, seed)
        res = attack(module, image, label_t, target=target_t, seed=seed,
                     progress=tracker.stage(f"adaptive attack through {name}"))
        stage = _stage(f"attack through {name}", res.timings, res.passes, "attack")
        stages.append(stage)
        adaptive_inputs[paradigm] = (res.adv_images, stage)

    for paradigm in PARADIGMS:
        defense = defense_objs[paradigm]
        name = defense.title or defense.name
        tracker.stage(f"{paradigm.value} defense: {name}")
        seen, attack_stage_p = adaptive_inputs.get(paradigm, (adv, None))
        out = defense(clf, seen, seed=seed)
        stage = _stage(f"{paradigm.value}: {name}", out.timings, out.passes, "defense")
        stages.append(stage)
        classified = out.images[0] if out.images is not None else seen[0]
        columns.append(Column(
            paradigm.value, f"{paradigm.value.capitalize()}: {name}", classified.detach().clamp(0, 1),
            out.logits.detach().float().softmax(-1)[0], labels, true_label, defense=defense.name,
            received=seen[0] if out.images is not None else None, changed=dict(out.changed),
            stages=[stage], attack_stage=attack_stage_p))
    tracker.finish()
    return ComparisonResult(
        labels, true_label, loaded.key, attack.name, dict(attack_params or {}), target, bool(adaptive), seed,
        image[0], adv[0], columns, stages)
