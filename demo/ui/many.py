"""The "Many images at once" panel: the page's current setup on N teaching-world images, every column's
accuracy with its 95% interval filling in as images finish, beside the published number where one exists.

Same conventions as `handlers`: component values in, component values out, user errors as `gr.Error`.
"""
from __future__ import annotations

import math
from typing import Callable

from ..defenses.base import Paradigm
from ..pipeline import InputError
from ..pipeline.compare import check_defenses
from ..eval.population import DEFAULT_N, MAX_N, run_population
from ..pipeline.stacked import with_stack
from . import parse, views
from .errors import Progress, user_errors
from .model_status import model_for, model_line
from .models import is_teaching

HEADERS = ["column", "right", "accuracy", "95% interval", "published (same setting)"]
NOT_TEACHING = ("Many images at once runs on the teaching world's images, which only the teaching models "
                "know; {model} would be judged on pictures it was never meant to read. Choose a teaching model "
                "(ResNet or ViT) in the Model selector.")

PopulationView = views.view_type("PopulationView", (), ("population_table", "population_summary",
                                                        "population_json"))


def _pct(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.0f}%"


def table_rows(scores) -> list[list]:
    """One row per column: its title, right / done, accuracy, 95% Wilson interval, published number."""
    rows = []
    for s in scores:
        lo, hi = s.interval
        published = (f"{_pct(s.published[0])} of {s.published[1]} ({s.published[2]})" if s.published else "none")
        rows.append([s.title, f"{s.correct} / {s.n}", _pct(s.accuracy),
                     "" if math.isnan(lo) else f"{_pct(lo)} to {_pct(hi)}", published])
    return rows


def settings(req) -> dict:
    """The request's defenses, plus their stack as the last column (the page's sixth) when it has a part."""
    out = dict(req.defenses or {})
    stack = with_stack(check_defenses(req.defenses)).get(Paradigm.STACKED)
    if stack is not None and stack.name != "none":
        out[Paradigm.STACKED.value] = (stack.name, {f.name: getattr(stack, f.name) for f in stack.params()})
    return out


def _summary(model: str, done: int, total: int, stopped: bool = False) -> str:
    state = f"**{done} of {total} images done.**" if done < total else f"**All {total} images done.**"
    if stopped:
        state += " Stopped: the numbers are those of the images finished."
    return (f"{model}\n\n{state} Accuracy per column over the images so far, with its 95% interval (Wilson): "
            "the narrower the interval, the more images back the number.")


@user_errors
def population(model_key, attack_name, eps, steps, mode, seed, training_time, test_time, training_free,
               attack_params="", defense_params="", n_images=DEFAULT_N, *, allowed: set[str],
               progress: Progress = None, emit: Callable | None = None) -> PopulationView:
    """The current setup (attack, mode, the three defenses and their stack) on the first `n_images`
    teaching-world test images: per column the accuracy, its 95% interval and the published number of
    the same setting. `emit(view)` receives the table after each image."""
    loaded = model_for(model_key, allowed)
    if not is_teaching(loaded):
        raise InputError(NOT_TEACHING.format(model=loaded.spec.label))
    try:
        n = int(n_images)
    except (TypeError, ValueError):
        raise InputError(f"The number of images must be a whole number from 1 to {MAX_N}, got {n_images!r}.") from None
    if n != n_images:
        raise InputError(f"The number of images must be a whole number from 1 to {MAX_N}, got {n_images!r}.")
    req = parse.request([], None, None, model_key, attack_name, eps, steps, mode, seed, attack_params,
                        (training_time, test_time, training_free), defense_params)
    line = model_line(model_key, loaded, allowed)

    def each(update) -> None:
        if emit is not None:
            emit(PopulationView(table_rows(update.scores), _summary(line, update.done, update.total), None))

    result = run_population(loaded, req.attack.name, dict(req.attack.params), settings(req), req.adaptive, n,
                            req.seed, progress=progress, on_image=each)
    return PopulationView(table_rows(result.scores), _summary(line, len(result.images), n, result.stopped),
                          result.to_dict())


def panel_note() -> str:
    return ("Runs the setup above (attack, mode, the three defenses and all three together) on the first N "
            "test images of the teaching world, the images the published results use, and fills in each "
            f"column's accuracy as images finish. Up to {MAX_N} images, as far as this server's time limit "
            "allows (a request over it is refused with how many fit). Teaching models only. Stop keeps the "
            "numbers of the images finished.")
