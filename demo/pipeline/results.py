"""What a comparison returns: the result panels (columns), the timed stages, and a JSON summary."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..attacks import to_display
from ..registry import ATTACKS

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
    summary: str = ""                   # what the defense did, in one plain sentence
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
    attack_params: dict          # every parameter the attack ran with, in pixel units
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
            "attack": {"name": self.attack, "params": self.attack_params,
                       "display": to_display(ATTACKS.get(self.attack), self.attack_params), "adaptive": self.adaptive,
                       "target": None if self.target is None else self.labels[self.target],
                       "succeeded": self.attack_succeeded,
                       "linf_255": round(float(delta.abs().max()) * 255, 4), "l2": round(float(delta.norm()), 6)},
            "seed": self.seed,
            "columns": [
                {"column": c.key, "title": c.title, "defense": c.defense, "prediction": c.pred_label,
                 "correct": c.correct, "true_label_probability": round(c.true_prob, 6),
                 "top5": [{"label": lab, "probability": round(p, 6)} for lab, p in c.top],
                 "ms": round(c.ms, 3), "passes": c.passes, "summary": c.summary, "changed": _jsonable(c.changed),
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
