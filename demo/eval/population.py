"""Many images at once: the page's current setup (attack + one defense per column) on N teaching-world
images, with the accuracy of every column and its 95% Wilson interval, filled in image by image.

One image is an anecdote; this is how often it happens. The images are the first N of the published
evaluation (`demo.eval`'s world images, same order), so a column's number can be set beside the
published one for the same setting (`published_reference`). Each image gets its own seed (seed + i),
as a batch of `demo.eval` gives each batch its own. Bounded like every request: the cost of all N
images is estimated before the first pass and refused above the server's limit, and a Stop ends the
run within one encoder pass, keeping what was finished.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch

from .. import world
from ..attacks import quantize
from ..defenses.base import Defense, Paradigm
from ..models.loading import LoadedModel
from ..timing import RunCancelled, cancellable
from ..pipeline import budget
from ..pipeline.compare import PARADIGMS, ProgressFn
from ..pipeline.inputs import InputError, make_attack, make_defense
from .metrics import wilson_interval
from .run import load_world

DEFAULT_N = 50
MAX_N = 500  # the published runs' size: beyond it the images have no published counterpart
SPLITS = {"seen": "world", "held_out": "world-held-out"}
COLUMN_ORDER = ("clean", "attacked") + tuple(p.value for p in PARADIGMS) + (Paradigm.STACKED.value,)


@dataclass
class ImageResult:
    """One image's outcome: the true label and, per column key, the predicted class index."""

    index: int
    label: int
    predictions: dict[str, int]

    def correct(self, key: str) -> bool:
        return self.predictions[key] == self.label


@dataclass
class ColumnScore:
    """A column's accuracy over the images done so far, with its 95% Wilson interval, and the
    published accuracy of the same setting where one exists (value, images, run name)."""

    key: str
    title: str
    correct: int
    n: int
    published: tuple[float, int, str] | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.accuracy, self.n)

    def to_dict(self) -> dict:
        lo, hi = self.interval
        out = {"key": self.key, "title": self.title, "correct": self.correct, "n": self.n,
               "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
               "interval_95": None if math.isnan(lo) else [lo, hi]}
        if self.published:
            out["published"] = {"accuracy": self.published[0], "n": self.published[1], "run": self.published[2]}
        return out


@dataclass
class PopulationUpdate:
    """What the page shows after each image: the image's result and every column's running score."""

    done: int
    total: int
    image: ImageResult
    scores: list[ColumnScore]


@dataclass
class PopulationResult:
    model: str
    attack: str
    attack_params: dict
    adaptive: bool
    split: str
    total: int
    images: list[ImageResult] = field(default_factory=list)
    scores: list[ColumnScore] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"model": self.model, "attack": self.attack, "attack_params": self.attack_params,
                "adaptive": self.adaptive, "split": self.split, "requested": self.total, "done": len(self.images),
                "stopped": self.stopped, "seconds": self.seconds, "columns": [s.to_dict() for s in self.scores],
                "per_image": [{"index": r.index, "label": r.label, "predictions": r.predictions} for r in self.images]}


def build_defenses(defenses: Mapping[Paradigm | str, tuple[str, dict]] | None) -> dict[str, Defense]:
    """Column key -> defense, for the columns given (paradigm values, and "stacked"); "none" adds no
    column (it would repeat the attacked one)."""
    out = {}
    for key, (name, params) in (defenses or {}).items():
        try:
            paradigm = Paradigm(key.value if isinstance(key, Paradigm) else str(key))
        except ValueError:
            raise InputError(f"Unknown column {key!r}; use {', '.join(p.value for p in Paradigm)}.") from None
        if name != "none":
            out[paradigm.value] = make_defense(paradigm, name, params)
    return {k: out[k] for k in COLUMN_ORDER if k in out}


def estimate(loaded: LoadedModel, attack, defenses: Mapping[str, Defense], adaptive: bool, n: int):
    """(passes, estimated seconds, limit) of a population run of n images."""
    per_image = budget.comparison_passes(attack, list(defenses.values()), adaptive)
    return n * per_image, budget.pass_times(loaded).seconds(n * per_image), budget.limit_seconds()


def max_images(loaded: LoadedModel, attack, defenses: Mapping[str, Defense], adaptive: bool) -> int:
    """How many images fit in the server's limit with this setup (at most MAX_N)."""
    _, one, limit = estimate(loaded, attack, defenses, adaptive, 1)
    return int(min(MAX_N, limit // one if one > 0 else MAX_N))


def published_reference(model_key: str, attack, defense: Defense | None, adaptive: bool, split: str,
                        column: str, results: dict | None = None) -> tuple[float, int, str] | None:
    """The published accuracy of the same setting (model, data split, attack and its parameters; for a
    defense column the same defense and attack mode), largest run first; None when none was run."""
    from .publish import published as P

    results = P.load() if results is None else results
    params = {f.name: getattr(attack, f.name) for f in attack.params()}
    best = None
    for run, r in results.items():
        if "protocol" in r:  # the randomized-defense protocol scores other quantities (demo.eval.randomized)
            continue
        a = r.get("attack", {})
        if not isinstance(a, dict) or r.get("model", {}).get("key") != model_key or a.get("name") != attack.name:
            continue
        if a.get("targeted") or a.get("crafted_on", model_key) != model_key or r["data"]["source"] != SPLITS[split]:
            continue
        if any(not _same(a.get("params", {}).get(k), v) for k, v in params.items()):
            continue
        if column in ("clean", "attacked"):
            value = r["undefended"]["clean_accuracy" if column == "clean" else "robust_accuracy"]
        else:
            row = next((d for d in r.get("defenses", []) if defense is not None and d["name"] == defense.name
                        and "error" not in d), None)
            if row is None or _changed(row, defense):
                continue
            value = row.get("robust_accuracy_adaptive" if adaptive else "robust_accuracy_oblivious")
            if value is None:
                continue
        if best is None or r["data"]["n"] > best[1]:
            best = (value, r["data"]["n"], run)
    return best


def _same(a, b) -> bool:
    if isinstance(b, float) and isinstance(a, (int, float)):
        return abs(a - b) < 1e-6
    return a == b


def _changed(row: dict, defense: Defense) -> bool:
    """Whether the page's defense differs from the published row's (a randomized defense with other draws);
    other parameters are not recorded per row, so a row counts only for a defense at its defaults."""
    defaults = type(defense)()
    if any(getattr(defense, f.name) != getattr(defaults, f.name) for f in defense.params()):
        return True
    return bool(row.get("eot_draws")) and getattr(defense, "eot_draws", None) != row["eot_draws"]


def iter_population(loaded: LoadedModel, attack_name: str, attack_params: dict | None = None,
                    defenses: Mapping[Paradigm | str, tuple[str, dict]] | None = None, adaptive: bool = False,
                    n: int = DEFAULT_N, seed: int = 0, split: str = "seen", progress: ProgressFn | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Iterator[PopulationUpdate]:
    """Yield a PopulationUpdate after each image. Raises InputError before any work for bad input or a
    run over the server's limit; stops quietly (no further updates) when `should_stop()` turns true."""
    if split not in SPLITS:
        raise InputError(f"Unknown split {split!r}; use {' or '.join(SPLITS)}.")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise InputError(f"The number of images must be a whole number from 1 to {MAX_N}, got {n!r}.")
    attack = make_attack(attack_name, attack_params or {})
    built = build_defenses(defenses)
    passes, seconds, limit = estimate(loaded, attack, built, adaptive, n)
    fits = max_images(loaded, attack, built, adaptive)
    budget.check(loaded, passes, [f"fewer images (about {fits} fit)"] + budget.advice(attack, built.values(), adaptive))
    images, labels = load_world(n, loaded.image_size, "seen" if split == "seen" else "held_out")
    clf = loaded.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    titles = {"clean": "Clean", "attacked": f"Attacked ({attack.title or attack.name})"}
    titles |= {k: d.title or d.name for k, d in built.items()}
    from .publish.published import load

    results = load()
    refs = {k: published_reference(loaded.key, attack, built.get(k), adaptive, split, k, results) for k in titles}
    counts = {k: 0 for k in titles}
    stop = should_stop or (lambda: False)
    for i in range(n):
        # Cancellable per image, not around the yield: the consumer's own work between images must not
        # run under this run's stop check.
        try:
            if stop():
                return
            with cancellable(stop):
                result = _one_image(clf, attack, built, adaptive, images[i:i + 1].to(loaded.device),
                                    labels[i:i + 1].to(loaded.device), int(seed) + i, i)
        except RunCancelled:
            return
        for k in counts:
            counts[k] += result.correct(k)
        if progress:
            progress((i + 1) / n, f"image {i + 1} of {n}")
        yield PopulationUpdate(i + 1, n, result, [ColumnScore(k, titles[k], counts[k], i + 1, refs[k]) for k in titles])


def _one_image(clf, attack, defenses: Mapping[str, Defense], adaptive: bool, x, y, seed: int, index: int) -> ImageResult:
    with torch.no_grad():
        preds = {"clean": int(clf(x).argmax(1))}
    adv = quantize(attack(clf, x, y, seed=seed).adv_images)
    with torch.no_grad():
        preds["attacked"] = int(clf(adv).argmax(1))
    for key, d in defenses.items():
        seen = adv
        if adaptive:
            seen = quantize(attack(d.as_module(clf, seed), x, y, seed=seed).adv_images)
        preds[key] = int(d(clf, seen, seed).logits.argmax(1))
    return ImageResult(index, int(y), preds)


def run_population(loaded: LoadedModel, attack_name: str, attack_params: dict | None = None,
                   defenses: Mapping[Paradigm | str, tuple[str, dict]] | None = None, adaptive: bool = False,
                   n: int = DEFAULT_N, seed: int = 0, split: str = "seen", progress: ProgressFn | None = None,
                   on_image: Callable[[PopulationUpdate], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> PopulationResult:
    """Run `iter_population` to the end (or the Stop) and return every image and column score;
    `on_image` gets each update as it comes, for pages that fill columns in."""
    start = time.perf_counter()
    out = PopulationResult(loaded.key, attack_name, dict(attack_params or {}), bool(adaptive), split, n)
    for update in iter_population(loaded, attack_name, attack_params, defenses, adaptive, n, seed, split,
                                  progress, should_stop):
        out.images.append(update.image)
        out.scores = update.scores
        if on_image:
            on_image(update)
    out.stopped = len(out.images) < n
    out.seconds = time.perf_counter() - start
    return out
