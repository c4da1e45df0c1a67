"""One comparison: classify an image clean, attack it, and classify the attack through one defense per paradigm.

The six columns (clean, attacked, training-time, test-time, training-free, and the three chosen defenses
stacked in one pipeline) each record the image that
was classified, the top-5 predictions, whether the prediction is right, its cost in milliseconds and
model passes. Every request builds its own classifier view, attack and defenses and seeds its own
generators, so concurrent requests cannot see each other; the shared model is only read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..attacks.base import quantize
from ..defenses.base import Paradigm
from ..models.loading import LoadedModel
from ..timing import Timings, count_passes, timer
from . import budget
from .inputs import InputError, check_index, check_labels, make_attack, make_defense
from .results import Column, ComparisonResult, Stage
from .stacked import stack_note, with_stack

ProgressFn = Callable[[float, str], None]
PARADIGMS = (Paradigm.TRAINING_TIME, Paradigm.TEST_TIME, Paradigm.TRAINING_FREE)
COLUMN_KEYS = ("clean", "attacked") + tuple(p.value for p in PARADIGMS) + (Paradigm.STACKED.value,)
# The comparison the page opens with: one defense per paradigm, so a first click shows all three at work.
DEFAULT_DEFENSES = {Paradigm.TRAINING_TIME: "tecoa", Paradigm.TEST_TIME: "rtpt", Paradigm.TRAINING_FREE: "jpeg"}


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


@dataclass(frozen=True)
class Source:
    """The model an attack is crafted on when it is not the one that answers: a transfer (black-box)
    attack, Papernot et al. 2016 and Liu et al. 2017 (see `demo.pipeline.transfer`). `classifier(labels)`
    is its zero-shot classifier over the answering model's labels."""

    label: str
    classifier: Callable[[list[str]], object]


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


def _default_summary(out, seen: torch.Tensor) -> str:
    """A plain account for defenses that report none of their own: how much the input changed."""
    if out.images is None:
        return ""
    change = 255.0 * float((out.images[0] - seen[0]).abs().max())
    mean = 255.0 * float((out.images[0] - seen[0]).abs().mean())
    return f"Changed the image's pixels by at most {change:.0f}/255 (on average {mean:.1f}/255) before classifying it."


def _defended(clf, defense_objs, inputs, labels, true_label, seed, tracker, stages, on_column=None) -> list[Column]:
    """Classify each paradigm's input through its defense: one column per paradigm."""
    columns = []
    note = stack_note(defense_objs)
    for paradigm in defense_objs:
        defense = defense_objs[paradigm]
        name = defense.title or defense.name
        stacked = paradigm == Paradigm.STACKED
        tracker.stage(f"{paradigm.value} defense: {name}")
        seen, attack_stage = inputs[paradigm]
        out = defense(clf, seen, seed=seed)
        stage = _stage(f"{paradigm.value}: {name}", out.timings, out.passes, "defense")
        stages.append(stage)
        classified = out.images[0] if out.images is not None else seen[0]
        summary = out.summary[0] if out.summary else _default_summary(out, seen)
        # The stack's title already says what it is ("Stacked: TeCoA + R-TPT + JPEG").
        title = name if stacked and defense.name != "none" else f"{paradigm.value.capitalize()}: {name}"
        columns.append(Column(
            paradigm.value, title, classified.detach().clamp(0, 1),
            out.logits.detach().float().softmax(-1)[0], labels, true_label, defense=defense.name,
            received=seen[0] if out.images is not None else None, changed=dict(out.changed),
            summary=" ".join(t for t in (summary, note if stacked else "") if t),
            stages=[stage], attack_stage=attack_stage))
        if on_column is not None:
            on_column(columns[-1])
    return columns


def classify(loaded: LoadedModel, image: torch.Tensor, labels: list[str], true_label: int | None = None) -> Column:
    """The clean prediction alone (true label defaults to it)."""
    labels = check_labels(labels)
    true_label = check_index(true_label, labels, "true label")
    image = check_image(image).to(loaded.device)
    probs, stage = _classify(loaded.classifier(labels), image, "clean inference")
    true_label = int(probs[0].argmax()) if true_label is None else true_label
    return Column("clean", "Clean", image[0], probs[0], labels, true_label, stages=[stage])


def run_defenses(
    loaded: LoadedModel,
    image: torch.Tensor,
    labels: list[str],
    true_label: int | None,
    defenses: Mapping[Paradigm | str, tuple[str, dict]] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    reference: torch.Tensor | None = None,
) -> tuple[list[Column], list[Stage], int]:
    """Classify `image` (e.g. an adversarial PNG) through one defense per paradigm.

    Without a true label, the undefended prediction on `reference` (the clean image) is taken, or on
    `image` itself when no reference is given. Returns (undefended column + three defense columns,
    stages, true label).
    """
    labels = check_labels(labels)
    true_label = check_index(true_label, labels, "true label")
    defense_objs = with_stack(check_defenses(defenses or {}))
    image = check_image(image).to(loaded.device)
    budget.check(loaded, budget.defense_passes(defense_objs.values()), [])
    clf = loaded.classifier(labels)
    tracker = _Progress(progress, [0.2] + [0.5] * len(defense_objs))
    tracker.stage("undefended prediction")
    probs, stage = _classify(clf, image, "undefended inference")
    stages = [stage]
    if true_label is None:
        ref_probs = probs if reference is None else _classify(clf, check_image(reference).to(loaded.device), "reference")[0]
        true_label = int(ref_probs[0].argmax())
    columns = [Column("attacked", "Undefended", image[0], probs[0], labels, true_label, stages=[stage])]
    columns += _defended(clf, defense_objs, {p: (image, None) for p in defense_objs}, labels, true_label, seed,
                         tracker, stages)
    tracker.finish()
    return columns, stages, true_label


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
    return labels, true_label, target, attack, check_defenses(defenses)


def check_defenses(defenses: Mapping[Paradigm | str, tuple[str, dict]] | None) -> dict[Paradigm, object]:
    """One defense per paradigm ("none" where not given); None means no defense columns at all."""
    if defenses is None:
        return {}
    unknown = {str(k.value if isinstance(k, Paradigm) else k) for k in defenses} - {p.value for p in PARADIGMS}
    if unknown:
        raise InputError(f"Unknown paradigm(s) {', '.join(sorted(unknown))}; use {', '.join(p.value for p in PARADIGMS)}.")
    built = {}
    for paradigm in PARADIGMS:
        name, params = defenses.get(paradigm, defenses.get(paradigm.value, ("none", {})))
        built[paradigm] = make_defense(paradigm, name, params)
    return built


def check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise InputError(f"The image must be a (1, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}.")
    if not torch.isfinite(image).all() or float(image.min()) < 0 or float(image.max()) > 1:
        raise InputError("The image values must lie in [0, 1].")
    # Uploads are 8-bit; putting the clean image on the uint8 grid makes the budget exact after quantization.
    return quantize(image.detach().float())


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
    on_column: Callable[[Column], None] | None = None,
    crafted_on: Source | None = None,
) -> ComparisonResult:
    """Clean and attacked predictions plus one defense per paradigm and the three stacked, with costs. `on_column` is called
    with each column as soon as it is ready (clean, attacked, then each defense), for pages that show
    results while the rest is computed.

    `defenses=None` skips the defense columns (attack only). `crafted_on`: craft the attack on that model
    instead (transfer); it never sees the answering model, so it cannot go through its defenses either
    (oblivious mode only).
    Oblivious (adaptive=False): one attack on the undefended model; every defense sees that image.
    Adaptive: each defense other than "none" gets its own attack through `defense.as_module` (BPDA/EOT
    where the defense is not differentiable or random) and is judged on that image; the stack's attack
    goes through the whole pipeline.
    """
    labels, true_label, target, attack, defense_objs = check_request(
        labels, true_label, target, attack_name, attack_params, defenses)
    defense_objs = with_stack(defense_objs)
    if crafted_on is not None and adaptive:
        raise InputError(f"An attack crafted on {crafted_on.label} never sees the model that answers, so it "
                         "cannot go through its defenses: choose the oblivious mode, or craft it on the same model.")
    image = check_image(image).to(loaded.device)
    chosen = list(defense_objs.values())
    budget.check(loaded, budget.comparison_passes(attack, chosen, adaptive), budget.advice(attack, chosen, adaptive))
    seed = int(seed)
    clf = loaded.classifier(labels)
    extra_attacks = [p for p in defense_objs if adaptive and defense_objs[p].name != "none"]
    steps = float(getattr(attack, "steps", 1) or 1)
    tracker = _Progress(progress, [0.2] + [steps] * (1 + len(extra_attacks)) + [0.5] * len(defense_objs))

    tracker.stage("clean prediction")
    probs, clean_stage = _classify(clf, image, "clean inference")
    if true_label is None:
        true_label = int(probs[0].argmax())
        if target == true_label:
            raise InputError(f"The target label {labels[target]!r} is what the model already predicts "
                             "for the clean image; pick another target.")
    stages = [clean_stage]
    columns = [Column("clean", "Clean", image[0], probs[0], labels, true_label, stages=[clean_stage])]
    notify = on_column or (lambda column: None)
    notify(columns[0])

    label_t = torch.tensor([true_label], device=image.device)
    target_t = None if target is None else torch.tensor([target], device=image.device)
    title = (attack.title or attack.name) + (f", crafted on {crafted_on.label}" if crafted_on else "")
    source = clf if crafted_on is None else crafted_on.classifier(labels)
    result = attack(source, image, label_t, target=target_t, seed=seed, progress=tracker.stage(f"attack ({title})"))
    # What a PNG of the attack decodes to: shown, downloaded and re-uploaded bit for bit as classified.
    adv = quantize(result.adv_images)
    attack_stage = _stage(f"attack: {title}", result.timings, result.passes, "attack")
    adv_probs, adv_stage = _classify(clf, adv, "attacked inference")
    stages += [attack_stage, adv_stage]
    columns.append(Column("attacked", f"Attacked ({title})", adv[0], adv_probs[0], labels, true_label,
                          stages=[adv_stage]))
    notify(columns[-1])

    adaptive_inputs = {}
    for paradigm in extra_attacks:
        defense = defense_objs[paradigm]
        name = defense.title or defense.name
        module = defense.as_module(clf, seed)
        res = attack(module, image, label_t, target=target_t, seed=seed,
                     progress=tracker.stage(f"adaptive attack through {name}"))
        stage = _stage(f"attack through {name}", res.timings, res.passes, "attack")
        stages.append(stage)
        adaptive_inputs[paradigm] = (quantize(res.adv_images), stage)

    columns += _defended(clf, defense_objs, {p: adaptive_inputs.get(p, (adv, None)) for p in defense_objs},
                         labels, true_label, seed, tracker, stages, on_column)
    tracker.finish()
    return ComparisonResult(
        labels, true_label, loaded.key, attack.name, {f.name: getattr(attack, f.name) for f in attack.params()},
        target, bool(adaptive), seed,
        image[0], adv[0], columns, stages)
