"""Event handlers: plain functions from component values to component values.

Each handler parses what the components hold (with `parse`: label text, /255 sliders, JSON parameter
text) and the image file, calls the library and converts the result with `views`. Errors written for users become `gr.Error`, so the page shows them and the
server keeps serving. The model set a visitor may choose from (`allowed`) is passed in by the page.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .. import pipeline
from ..defenses.test_time.tpt import suggested_views
from ..models import world_check
from ..pipeline import USER_ERRORS, InputError, budget
from ..pipeline.compare import check_defenses
from ..pipeline.stacked import with_stack
from ..attacks.base import show
from ..attacks import build_attack
from ..registry import ATTACKS
from . import crafted, parse, views
from .errors import Progress, user_errors
from .model_status import model_for, model_line, model_note, outside_world, warning_text
from .models import get_model
from .parse import (  # noqa: F401  (re-exported: the page and tests use them through this module)
    AUTO_TRUE,
    NO_TARGET,
    attack_settings,
    defense_settings,
    label_index,
    parse_eps_list,
    parse_json,
    parse_labels,
    parse_seed,
)
from .views import ColumnView

log = logging.getLogger(__name__)

OBLIVIOUS, ADAPTIVE = pipeline.OBLIVIOUS, pipeline.ADAPTIVE


def image_tensor(loaded, image) -> torch.Tensor:
    """An uploaded file path, PIL image or array -> the model's (1, 3, S, S) input."""
    if image is None or (isinstance(image, str) and not image.strip()):
        raise InputError("No image yet: upload or paste one, or pick an example.")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    return pipeline.to_model_input(loaded, image if isinstance(image, Image.Image) else Path(image))


VIEW_DEFENSES = ("tpt", "rtpt")


def estimate(model_key, attack_name, eps, steps, mode, training_time, test_time, training_free, attack_params="",
             defense_params="", *, allowed: set[str]) -> str:
    """The cost of "Run all" with these settings, said before it runs (or why it would be refused)."""
    try:
        loaded = model_for(model_key, allowed)
        req = parse.request([], None, None, model_key, attack_name, eps, steps, mode, 0, attack_params,
                            (training_time, test_time, training_free), defense_params)
        attack = build_attack(req.attack, InputError)
        defenses = list(with_stack(check_defenses(req.defenses)).values())
        passes, seconds, limit = budget.estimate(loaded, attack, defenses, req.adaptive)
    except USER_ERRORS as exc:
        return f"Cost: cannot be estimated with these settings ({exc})"
    verdict = ("within" if seconds <= limit else "**over**") + f" this server's limit of {limit:.0f} s"
    return f"Cost of **Run all**: about {passes.total:,.0f} image-encoder passes, about {seconds:.1f} s here ({verdict})."


def defense_starts(model_key: str, *, allowed: set[str]) -> dict:
    """Starting values of defense controls that depend on the loaded model ({defense: {field: value}}):
    the number of test-time views (see `suggested_views`). Empty when the model cannot be loaded."""
    try:
        model, _ = get_model(model_key, allowed)
    except USER_ERRORS:
        return {}
    views = suggested_views(model.image_size, model.device.type, model.precision)
    return {name: {"views": views} for name in VIEW_DEFENSES}


@user_errors
def classify(image, labels_text: str, true_label: str, model_key: str, *, allowed: set[str]) -> ColumnView:
    loaded = model_for(model_key, allowed)
    labels = pipeline.check_labels(parse_labels(labels_text))
    x = image_tensor(loaded, image)
    column = pipeline.classify(loaded, x, labels, label_index(true_label, labels, "true label"))
    return views.column_view(column, assumed=label_index(true_label, labels, "true label") is None,
                             model_note=model_note(model_key, loaded, allowed), outside=outside_world(loaded, x))


# What each long handler returns, by name: result columns (`views.RESULT_COLUMNS`) and named outputs.
# The page's components carry the same names (`Page.outputs`), so a view's fields are its outputs.
AttackView = views.view_type("AttackView", views.RESULT_COLUMNS[:2], ("heatmap", "adversarial_file", "summary"))
DefendView = views.view_type("DefendView", views.DEFENSE_COLUMNS,
                             ("changes", "timing_chart", "timing_table", "summary"))
CompareView = views.view_type("CompareView", views.RESULT_COLUMNS,
                              ("heatmap", "changes", "timing_chart", "timing_table", "adversarial_file",
                               "results_file", "summary", "strip"))  # strip: every verdict in one line


def _lead(outside: bool) -> str:
    """The out-of-world warning as the first paragraph of a summary, or ''."""
    return warning_text(outside) + "\n\n" if outside else ""


def flat(view: tuple) -> tuple:
    """A view with nested ColumnViews -> the flat tuple of component values, in order."""
    out: list = []
    for item in view:
        out.extend(item if isinstance(item, ColumnView) else (item,))
    return tuple(out)


def _eps_text(name: str, params: dict) -> str:
    """", eps 16/255, 10 steps of 4/255" from the parameters an attack ran with."""
    fields = {f.name: f for f in ATTACKS.get(name).params()}
    parts = [f", eps {show(params['eps'], fields['eps'])}" if "eps" in params else ""]
    if "steps" in params:
        parts.append(f", {params['steps']} steps" + (f" of {show(params['alpha'], fields['alpha'])}" if "alpha" in params
                                                      else ""))
    return "".join(parts)


def _linf_budget(name: str, params: dict) -> float | None:
    return params.get("eps") if ATTACKS.get(name).norm == "linf" else None


def _request(image, labels_text, true_label, target, model_key, allowed):
    loaded = model_for(model_key, allowed)
    labels = pipeline.check_labels(parse_labels(labels_text))
    return (loaded, image_tensor(loaded, image), labels, label_index(true_label, labels, "true label"),
            label_index(target, labels, "target label"))


def _inputs(image, labels_text, model_key, allowed):
    """(model, image tensor, labels) of a request."""
    loaded = model_for(model_key, allowed)
    return loaded, image_tensor(loaded, image), pipeline.check_labels(parse_labels(labels_text))


@user_errors
def attack(image, labels_text, true_label, model_key, attack_name, eps, steps, target, seed,
           attack_params="", crafted_on="", *, allowed: set[str], progress: Progress = None) -> AttackView:
    """`crafted_on` (optional): "" crafts the attack on the model that answers; see `crafted.choices`."""
    loaded, x, labels = _inputs(image, labels_text, model_key, allowed)
    req = parse.request(labels, true_label, target, model_key, attack_name, eps, steps, OBLIVIOUS, seed, attack_params)
    src = crafted.source(crafted_on, loaded, allowed)
    result = _run(loaded, x, labels, req, progress, src=src)
    name, params, true_idx = result.attack, result.attack_params, req.true_label
    folder = views.new_download_dir()
    adv_file = views.write_png(folder, f"adversarial_{views.safe_name(name)}.png", pipeline.to_uint8(result.adversarial))
    assumed, outside = true_idx is None, outside_world(loaded, x)
    return AttackView(**_column_views(result.columns, AttackView, assumed, outside),
                      heatmap=views.perturbation_figure(result, _linf_budget(name, params)), adversarial_file=adv_file,
                      summary=_lead(outside) + model_line(model_key, loaded, allowed) + _crafted(src, loaded) + "\n\n"
                      + views.attack_summary(result, ATTACKS.get(name).title or name, _eps_text(name, params)))


def _run(loaded, x, labels, req, progress, on_column=None, src=None):
    """`pipeline.run_request`, with the attack crafted on `src` when given (a transfer)."""
    return pipeline.run_comparison(loaded, x, labels, req.true_label, req.attack.name, dict(req.attack.params),
                                   req.target, req.defenses, req.adaptive, req.seed, progress, on_column, src)


def _crafted(src, loaded) -> str:
    return " " + crafted.line(src, loaded) if src is not None else ""


@user_errors
def defend(image, adversarial, labels_text, true_label, model_key, training_time, test_time, training_free,
           defense_params="", seed=0, *, allowed: set[str], progress: Progress = None) -> DefendView:
    """Classify `adversarial` (or `image` when there is none) through one defense per paradigm; the true
    label defaults to the clean prediction on `image`."""
    loaded, x, labels, true_idx, _ = _request(image, labels_text, true_label, None, model_key, allowed)
    attacked = image_tensor(loaded, adversarial) if adversarial is not None else x
    columns, stages, _ = pipeline.run_defenses(
        loaded, attacked, labels, true_idx, defense_settings(training_time, test_time, training_free, defense_params),
        parse_seed(seed), progress, reference=x)
    assumed, outside = true_idx is None, outside_world(loaded, x)
    defended = columns[1:]
    return DefendView(**_column_views(defended, DefendView, assumed, outside),
                      changes=views.changes_figure(defended), timing_chart=views.timing_figure(stages),
                      timing_table=views.timing_rows(stages),
                      summary=_lead(outside) + model_line(model_key, loaded, allowed) + "\n\n"
                      + views.changed_markdown(defended))


@user_errors
def compare(image, labels_text, true_label, model_key, attack_name, eps, steps, target, mode, seed,
            training_time, test_time, training_free, attack_params="", defense_params="", crafted_on="", *,
            allowed: set[str], progress: Progress = None, emit: Callable | None = None) -> CompareView:
    """The full comparison; `emit(view)`, when given, receives a partial view each time a column is ready
    (the columns not computed yet are blank and say so), so a page can show them at once. `crafted_on`
    (optional, default "": the model that answers) crafts the attack on another model (`crafted.choices`)."""
    loaded, x, labels = _inputs(image, labels_text, model_key, allowed)
    req = parse.request(labels, true_label, target, model_key, attack_name, eps, steps, mode, seed, attack_params,
                        (training_time, test_time, training_free), defense_params)
    src = crafted.source(crafted_on, loaded, allowed)
    assumed, outside = req.true_label is None, outside_world(loaded, x)
    computed: dict = {}

    def ready(column) -> None:
        computed[column.key] = column
        pending = {c.field: views.pending_view() for c in views.RESULT_COLUMNS}
        emit(CompareView(**{**pending, **_column_views(computed.values(), CompareView, assumed, outside)},
                         summary=f"Computing: {len(computed)} of {len(views.RESULT_COLUMNS)} columns ready.",
                         strip=_strip(computed, assumed, outside)))

    result = _run(loaded, x, labels, req, progress, ready if emit else None, src)
    name, params = result.attack, result.attack_params
    defended = result.columns[2:]
    folder = views.new_download_dir()
    adv_file = views.write_png(folder, f"adversarial_{views.safe_name(name)}.png", pipeline.to_uint8(result.adversarial))
    data = result.to_dict()
    data["model_label"] = loaded.spec.label
    data["crafted_on"] = src.label if src is not None else loaded.spec.label
    summary = _lead(outside) + model_line(model_key, loaded, allowed) + _crafted(src, loaded) + "\n\n" + views.attack_summary(
        result, ATTACKS.get(name).title or name, _eps_text(name, params))
    changed = views.changed_markdown(defended)
    return CompareView(**_column_views(result.columns, CompareView, assumed, outside),
                       heatmap=views.perturbation_figure(result, _linf_budget(name, params)),
                       changes=views.changes_figure(defended), timing_chart=views.timing_figure(result.stages),
                       timing_table=views.timing_rows(result.stages), adversarial_file=adv_file,
                       results_file=views.write_json(folder, "results.json", data),
                       summary=summary + ("\n\n**What the defenses did**\n\n" + changed if changed else ""),
                       strip=_strip({c.key: c for c in result.columns}, assumed, outside))


def _column_views(columns, view, assumed: bool, outside: bool) -> dict:
    """{field: ColumnView} for the columns that `view` shows, by column key."""
    fields = {c.key: c.field for c in views.RESULT_COLUMNS if c.field in view._fields}
    return {fields[c.key]: views.column_view(c, assumed, outside=outside) for c in columns if c.key in fields}


def _strip(computed: dict, assumed: bool, outside: bool) -> str:
    """The verdict strip: every result column, computed ones with their verdict."""
    return views.verdict_strip([computed.get(c.key) for c in views.RESULT_COLUMNS],
                               [c.short for c in views.RESULT_COLUMNS], assumed, outside)


@user_errors
def compare_json(image, labels_text, true_label, model_key, attack_name, eps, steps, target, mode, seed,
                 training_time, test_time, training_free, attack_params="", defense_params="", crafted_on="", *,
                 allowed: set[str], progress: Progress = None) -> dict:
    """The comparison of /compare as one JSON document: model, labels, attack, per column (clean, attacked,
    one per paradigm, "stacked": the three together) the prediction, whether it is correct, top-5, time, passes and what the defense did,
    and the stages' timings, and which model the attack was crafted on. The same inputs as /compare."""
    loaded, x, labels = _inputs(image, labels_text, model_key, allowed)
    req = parse.request(labels, true_label, target, model_key, attack_name, eps, steps, mode, seed, attack_params,
                        (training_time, test_time, training_free), defense_params)
    src = crafted.source(crafted_on, loaded, allowed)
    result = _run(loaded, x, labels, req, progress, src=src)
    data = result.to_dict()
    outside = outside_world(loaded, x)
    if outside:  # an answer about an image the model cannot know is neither right nor wrong
        for column in data["columns"]:
            column["correct"] = None
    return {**data, "model_label": loaded.spec.label, "model_note": model_note(model_key, loaded, allowed),
            "crafted_on": src.label if src is not None else loaded.spec.label,
            "true_label_assumed": req.true_label is None, "outside_world": outside,
            "outside_world_note": world_check.SENTENCE if outside else ""}
