"""Handlers of the two exploration panels: the attack's steps (recorded once, then scrubbed) and the
robustness curve over a list of budgets. Same conventions as `handlers`: component values in, component
values out, user errors as `gr.Error`."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import gradio as gr

from .. import pipeline
from ..attacks import to_display
from ..pipeline.steps import attack_steps
from ..registry import ATTACKS
from ..viz import curve_chart, steps_chart
from . import views
from . import parse
from .errors import Progress, user_errors
from .handlers import ADAPTIVE, _inputs, _linf_budget, _request
from .parse import attack_settings, parse_seed

DEFAULT_CURVE_EPS = "0, 1, 2, 4, 8"


class CurveView(NamedTuple):
    chart: np.ndarray
    table: list
    results_file: str


class StepsView(NamedTuple):
    state: dict
    slider: object
    frame: np.ndarray
    heatmap: np.ndarray
    chart: np.ndarray
    caption: str


@user_errors
def record_steps(image, labels_text, true_label, model_key, attack_name, eps, steps, target, seed, attack_params="",
                 *, allowed: set[str], progress: Progress = None) -> StepsView:
    """Run the attack once on the undefended model and keep its image at every step, for the scrubber."""
    loaded, x, labels, true_idx, target_idx = _request(image, labels_text, true_label, target, model_key, allowed)
    name, params = attack_settings(attack_name, eps, steps, attack_params)
    run = attack_steps(loaded, x, labels, true_idx, name, params, target_idx, parse_seed(seed))
    state = {"clean": pipeline.to_uint8(run.clean), "frames": [pipeline.to_uint8(f) for f in run.frames],
             "true_prob": run.true_prob, "loss": run.loss, "predictions": run.predictions,
             "true_label": run.labels[run.true_label], "budget": _linf_budget(name, params)}
    last = len(run.frames) - 1
    return StepsView(state, gr.Slider(minimum=0, maximum=last, value=last, step=1, interactive=True),
                     *step_views(state, last))


def step_views(state: dict | None, k) -> tuple:
    """(image at step k, its perturbation, the chart, a caption) from a recorded run."""
    if not state or not state.get("frames"):
        raise gr.Error("Record the attack's steps first.", title="Nothing recorded yet", print_exception=False)
    k = int(min(max(int(k or 0), 0), len(state["frames"]) - 1))
    frame = np.asarray(state["frames"][k], dtype=np.uint8)
    clean, adv = pipeline.from_uint8(np.asarray(state["clean"], dtype=np.uint8)), pipeline.from_uint8(frame)
    heat = views.perturbation_heatmap(clean, adv, state.get("budget"), title=f"What the attack added by step {k}")
    pred, prob = state["predictions"][k], state["true_prob"][k]
    verdict = "still right" if pred == state["true_label"] else "fooled"
    caption = (f"**Step {k} of {len(state['frames']) - 1}:** the model says **{pred}** ({verdict}); the true label "
               f"**{state['true_label']}** has probability {prob:.0%}, the loss is {state['loss'][k]:.2f}.")
    return frame, heat, steps_chart(state["true_prob"], state["loss"], k), caption


def show_step(state, k, *, allowed: set[str] = frozenset()) -> tuple:
    return step_views(state, k)


@user_errors
def curve(image, labels_text, true_label, model_key, attack_name, steps, target, mode, seed,
          training_time, test_time, training_free, attack_params="", defense_params="",
          eps_list: str = DEFAULT_CURVE_EPS, *, allowed: set[str], progress: Progress = None) -> CurveView:
    loaded, x, labels = _inputs(image, labels_text, model_key, allowed)
    req = parse.request(labels, true_label, target, model_key, attack_name, None, steps, mode, seed, attack_params,
                        (training_time, test_time, training_free), defense_params)
    name = req.attack.name
    eps_values = parse.parse_eps_list(eps_list, name)
    cls = ATTACKS.get(name)
    unit = next((f.metadata.get("unit", "") for f in cls.params() if f.name == "eps"), "")
    result = pipeline.curve_request(loaded, x, labels, req, eps_values, progress)
    eps_ui = [to_display(cls, {"eps": e})["eps"] for e in result.eps]
    series = {k: [(p.true_prob, p.correct) for p in pts] for k, pts in result.series.items()}
    chart = curve_chart(eps_ui, series, title=f"{ATTACKS.get(name).title or name}, "
                                              f"{'adaptive' if mode == ADAPTIVE else 'oblivious'}",
                        x_label="attack budget eps" + (" (/255)" if unit == "/255" else " (pixels in [0, 1])"))
    table = [[name_, round(e, 3), p.prediction, "yes" if p.correct else "no", round(p.true_prob, 4)]
             for name_, pts in result.series.items() for e, p in zip(eps_ui, pts)]
    data = {"model": loaded.key, "model_label": loaded.spec.label, **result.to_dict()}
    json_file = views.write_json(views.new_download_dir(), "robustness_curve.json", data)
    return CurveView(chart, table, json_file)
