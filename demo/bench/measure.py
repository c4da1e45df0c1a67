"""In-process measurements: single-pass times, every attack and defense, and the app's full comparison.

Times are wall-clock milliseconds per image, the median over repeated runs after warm-up runs; on a GPU
each run is bracketed by a synchronize. Passes come from the library's own counters (`count_passes`
inside `ZeroShotClassifier.encode`): `forward` images encoded without gradient, `grad` images encoded
with gradient (each followed by a backward).

overhead ratio = measured ms / (forward passes x single forward ms + grad passes x single forward+backward ms)

with the single-pass times measured on the same images and batch size, interleaved with the method's own
runs (one forward and one forward + backward right before each timed run). The ratio is taken per timed
run, against the single passes just before it, and reported as the median over runs, so that the
machine's speed drifting during a long benchmark cancels out (the ratio of the medians is kept in the
JSON as `ratio_of_medians`).

A ratio near 1 means the method costs what its passes cost; above 1 is work outside the counted image-encoder passes
(text-tower passes, augmentation, Python overhead, library wrappers); below 1 happens when a method
batches more images per encoder call (views) than the single-pass measurement did.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..attacks import ATTACKS
from ..defenses import DEFENSES
from ..defenses.base import Paradigm
from ..models.loading import LoadedModel
from ..models.teaching import MODELS as TEACHING_MODELS
from ..pipeline import PARADIGMS, to_model_input

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
PRESETS = ROOT / "assets" / "presets"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MAX_REPEATS = 400


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int,
          references: dict[str, Callable[[], object]] | None = None,
          min_seconds: float = 0.0) -> tuple[list[float], object, dict[str, list[float]]]:
    """Run `fn` warmup + repeats times; (wall ms of the timed runs, the last result, reference ms).

    references: callables timed once right before each timed run of `fn`, so that a ratio of `fn` to a
    reference compares runs made seconds apart (machine speed drifts over a long benchmark).
    min_seconds: keep repeating (up to MAX_REPEATS runs) until the timed runs of `fn` add up to this:
    a 10 ms method then gets a hundred samples instead of a handful, which steadies its median.
    """
    out = None
    for _ in range(warmup):
        out = fn()
    samples: list[float] = []
    refs: dict[str, list[float]] = {name: [] for name in references or {}}
    while len(samples) < max(repeats, 1) or (sum(samples) < min_seconds * 1000.0 and len(samples) < MAX_REPEATS):
        for name, ref in (references or {}).items():
            refs[name].append(_time_once(ref, device))
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples, out, refs


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1000.0


def is_teaching(loaded: LoadedModel) -> bool:
    return loaded.key in TEACHING_MODELS or loaded.spec.base in TEACHING_MODELS


def preset_labels(name: str) -> list[str]:
    lines = (PRESETS / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def app_defaults(loaded: LoadedModel) -> tuple[list[str], list[Path]]:
    """The labels and example images the app offers first for this model (teaching world or photos)."""
    if is_teaching(loaded):
        return preset_labels("teaching_world"), sorted(EXAMPLES.glob("teaching_*.png"))
    return preset_labels("common_objects"), sorted(EXAMPLES.glob("photo_*.png"))


def workload(loaded: LoadedModel, batch: int):
    """(classifier, images (batch, 3, S, S) on the uint8 grid, their clean predictions as labels, paths)."""
    labels, paths = app_defaults(loaded)
    paths = [paths[i % len(paths)] for i in range(batch)]
    images = torch.cat([to_model_input(loaded, p) for p in paths])
    clf = loaded.classifier(labels)  # text features computed (and cached) here, outside every timing
    with torch.no_grad():
        y = clf(images).argmax(-1)
    return clf, images, y, paths


def pass_functions(clf, images: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One forward (no grad) and one forward + backward to the input, on the benchmark batch."""

    def forward():
        with torch.no_grad():
            return clf(images)

    def forward_backward():
        x = images.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(clf(x), y)
            return torch.autograd.grad(loss, x)[0]

    return {"forward": forward, "grad": forward_backward}


def single_pass(clf, images: torch.Tensor, y: torch.Tensor, repeats: int, warmup: int) -> dict:
    """Per-image ms of one forward (no grad) and of one forward + backward to the input."""
    n = images.shape[0]
    passes = pass_functions(clf, images, y)
    fwd, _, _ = timed(passes["forward"], images.device, repeats, warmup)
    fb, _, _ = timed(passes["grad"], images.device, repeats, warmup)
    return {"forward_samples": [s / n for s in fwd], "grad_samples": [s / n for s in fb]}


def combine_single(*measured: dict) -> dict:
    """Medians over single-pass measurements taken at several points of the run (guards against drift)."""
    fwd = [s for m in measured for s in m["forward_samples"]]
    fb = [s for m in measured for s in m["grad_samples"]]
    return {"forward_ms": statistics.median(fwd), "grad_ms": statistics.median(fb), "samples": len(fwd)}


def defaults(cls) -> dict:
    return {f.name: getattr(cls(), f.name) for f in fields(cls) if f.init}


def _row(kind: str, name: str, cls, samples: list[float], n: int, passes: dict | None, error: str | None,
         refs: dict[str, list[float]] | None = None) -> dict:
    row = {"kind": kind, "name": name, "title": getattr(cls, "title", "") or name, "params": defaults(cls),
           "ms_per_image": statistics.median(samples) / n if samples else None,
           "samples_ms_per_image": [s / n for s in samples],
           "forward": None if passes is None else float(passes.get("forward", 0.0)),
           "grad": None if passes is None else float(passes.get("grad", 0.0)), "error": error}
    if refs and all(refs.values()):
        row["reference"] = {"forward_ms": statistics.median(refs["forward"]) / n,
                            "grad_ms": statistics.median(refs["grad"]) / n, "samples": len(refs["forward"]),
                            "forward_samples": [s / n for s in refs["forward"]],
                            "grad_samples": [s / n for s in refs["grad"]]}
    if kind == "defense":
        row["paradigm"] = cls.paradigm.value
    return row


def _bench(kind: str, registry, call, clf, images, y, names, repeats: int, warmup: int,
           min_seconds: float) -> list[dict]:
    """One row per method: `call(method)` timed with its default parameters, single passes interleaved."""
    rows, refs = [], pass_functions(clf, images, y)
    for name in names:
        cls = registry.get(name)
        method = cls()
        try:
            samples, out, ref = timed(lambda: call(method), images.device, repeats, warmup, refs, min_seconds)
            rows.append(_row(kind, name, cls, samples, images.shape[0], out.passes, None, ref))
        except Exception as exc:  # a failing method is a finding for the table, not the end of the run
            rows.append(_row(kind, name, cls, [], images.shape[0], None, f"{type(exc).__name__}: {exc}"))
    return rows


def bench_attacks(clf, images, y, names, repeats: int, warmup: int, seed: int = 0,
                  min_seconds: float = 0.0) -> list[dict]:
    return _bench("attack", ATTACKS, lambda attack: attack(clf, images, y, seed=seed), clf, images, y, names,
                  repeats, warmup, min_seconds)


def bench_defenses(clf, images, y, names, repeats: int, warmup: int, seed: int = 0,
                   min_seconds: float = 0.0) -> list[dict]:
    """Each defense on `images`; `y` only labels the interleaved single-pass references."""
    return _bench("defense", DEFENSES, lambda defense: defense(clf, images, seed=seed), clf, images, y, names,
                  repeats, warmup, min_seconds)


def add_ratios(rows: list[dict], single: dict) -> list[dict]:
    """Expected ms and overhead ratio of each row: from the single passes timed alongside the row's own
    runs when there are any, else from the run-wide single-pass medians."""
    for row in rows:
        if row["ms_per_image"] is None:
            row["expected_ms"] = row["ratio"] = None
            continue
        ref = row.get("reference") or single
        expected = row["forward"] * ref["forward_ms"] + row["grad"] * ref["grad_ms"]
        row["expected_ms"] = expected
        row["ratio_of_medians"] = row["ms_per_image"] / expected if expected > 0 else None
        row["ratio"] = row["ratio_of_medians"]
        if "forward_samples" in ref and expected > 0:
            # Each timed run against the single passes timed just before it: on a machine whose speed
            # wanders (a shared VM), the median of these paired ratios moves least between runs.
            pairs = [m / (row["forward"] * f + row["grad"] * g) for m, f, g in
                     zip(row["samples_ms_per_image"], ref["forward_samples"], ref["grad_samples"])]
            row["ratio"] = statistics.median(pairs)
    return rows


def default_comparison_defenses() -> dict[str, str]:
    """The page's preselected defense per paradigm (`demo.pipeline.DEFAULT_DEFENSES`): the comparison a
    visitor's first click runs."""
    from ..pipeline import DEFAULT_DEFENSES

    return {p.value: DEFAULT_DEFENSES[p] for p in PARADIGMS}


def bench_comparison(loaded: LoadedModel, image_path: Path, defenses: dict[str, str], repeats: int, warmup: int,
                     via_handler: bool, seed: int = 0, views: int | None = None) -> dict:
    """The full comparison (clean + default attack + one defense per paradigm), as the app runs it.

    via_handler: through the handler function `demo.ui.handlers.compare` (parsing, the library run,
    figures and download files: what the /compare event computes, without the server's queue and
    streaming, which the load test covers), else through `demo.pipeline.run_comparison`.
    Both report the library's own stage breakdown from one extra run.
    """
    from ..pipeline import run_comparison

    attack = "pgd"
    labels, _ = app_defaults(loaded)
    attack_params = defaults(ATTACKS.get(attack))
    image = to_model_input(loaded, image_path)
    # The page's starting values for this model (fewer test-time views on a CPU for real-size models),
    # so that the comparison measured is the one a visitor's first click runs.
    from ..defenses.test_time.tpt import suggested_views

    views = suggested_views(loaded.image_size, loaded.device.type, loaded.precision) if views is None else views
    starts = {n: {"views": views} for n in defenses.values() if n in ("tpt", "rtpt")}
    lib_defenses = {Paradigm(p): (n, dict(starts.get(n, {}))) for p, n in defenses.items()}

    def library():
        return run_comparison(loaded, image, labels, None, attack, attack_params, None, lib_defenses, False, seed)

    route = "demo.pipeline.run_comparison"
    run = library
    if via_handler:
        import importlib

        handlers = importlib.import_module("demo.ui.handlers")  # imports the UI toolkit, launches nothing
        # The page's controls by name; eps is shown in /255 on the page.
        kwargs = dict(image=str(image_path), labels_text="\n".join(labels), true_label=handlers.AUTO_TRUE,
                      model_key=loaded.key, attack_name=attack, eps=attack_params["eps"] * 255.0,
                      steps=attack_params["steps"], target=handlers.NO_TARGET, mode=handlers.OBLIVIOUS, seed=seed,
                      training_time=defenses[Paradigm.TRAINING_TIME.value],
                      test_time=defenses[Paradigm.TEST_TIME.value],
                      training_free=defenses[Paradigm.TRAINING_FREE.value], attack_params="",
                      defense_params=json.dumps(starts))

        def run():
            return handlers.compare(**kwargs, allowed={loaded.key})

        route = "demo.ui.handlers.compare"
    samples, _, _ = timed(run, loaded.device, repeats, warmup)
    result = library()
    predictions = [c.pred_label for c in result.columns]
    return {"route": route, "attack": attack, "attack_params": attack_params, "defenses": defenses,
            "defense_params": starts, "precision": getattr(loaded, "precision", "fp32"), "predictions": predictions,
            "labels": len(labels), "image": image_path.name, "ms": statistics.median(samples), "samples_ms": samples,
            "stages": [{"stage": s.name, "ms": s.ms, "forward": s.forward, "grad": s.grad} for s in result.stages]}


def bench_levers(loaded: LoadedModel, image_path: Path, defenses: dict[str, str], repeats: int, warmup: int,
                 via_handler: bool, seed: int = 0) -> list[dict]:
    """The full comparison under each speed lever: the image tower's precision (fp32, and bf16 where the
    CPU runs it natively) times the test-time views (the paper's 64, and 32, the page's start for
    real-size models in fp32 on a CPU).
    The predictions of each setting are recorded so that a lever that changes an answer shows it."""
    from ..defenses.test_time.tpt import suggested_views
    from ..models.loading import precision_for

    precisions = ["fp32"] + (["bf16"] if precision_for(loaded.image_size, loaded.device, "auto") == "bf16" else [])
    view_counts = sorted({64, 32}, reverse=True)
    before, out = loaded.precision, []
    try:
        for precision in precisions:
            loaded.precision = precision  # a benchmark process of its own: no request shares this model
            for views in view_counts:
                r = bench_comparison(loaded, image_path, defenses, repeats, warmup, via_handler, seed, views)
                out.append({"precision": precision, "views": views, "ms": r["ms"],
                            "library_ms": sum(st["ms"] for st in r["stages"]), "stages": r["stages"],
                            "predictions": r.get("predictions")})
    finally:
        loaded.precision = before
    return out
