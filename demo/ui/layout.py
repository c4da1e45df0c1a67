"""The whole page: header, the Explore tab (panels + events) and the Learn tab."""
from __future__ import annotations

import atexit
import importlib
import logging
import threading

import gradio as gr

from ..models.loading import exact_float32
from ..models.teaching import MODELS as TEACHING_MODELS
from ..pipeline import PARADIGMS
from . import assets, handlers, learn, model_status, models, panels, wiring, zerogpu
from .components import App

log = logging.getLogger(__name__)

TITLE = "Adversarial attacks and defenses on CLIP"
QUEUE_SIZE = 32          # waiting requests beyond this get "queue full" instead of an endless wait
CACHE_CLEANUP = (3600, 3600)  # uploaded and generated files are removed after an hour


def startup_status(startup: str, allowed: set[str]) -> tuple[str, bool]:
    """The model status shown when the page opens; a model that fails to load is reported, not fatal."""
    try:
        return model_status.select_model(startup, allowed=allowed)
    except gr.Error as exc:
        log.error("startup model %s: %s", startup, exc.message)
        return f"**Model not available:** {exc.message}", startup in TEACHING_MODELS


_WARM_STOP = threading.Event()


def _stop_warm_up(thread: threading.Thread) -> None:
    _WARM_STOP.set()
    thread.join(timeout=120)


def _warm_up(model_key: str | None = None, allowed: set[str] | None = None) -> None:
    """In the background, so that the first click pays for none of it: import the attack backend, load
    the startup model's robust twins (the training-time towers) and, where the image tower runs in bf16,
    make its bf16 copy."""
    try:
        importlib.import_module("torchattacks")
    except Exception:  # the attacks report a missing backend themselves, with a clear message
        log.debug("torchattacks not importable", exc_info=True)
    if model_key is None or _WARM_STOP.is_set():
        return
    try:
        from ..models.classifier import bf16_twin
        from ..models.loading import load_image_tower
        from ..models.zoo import ZOO

        loaded = models.get_model(model_key, allowed or {model_key})[0]
        towers = [loaded.clip.visual]
        for twin in getattr(ZOO.get(loaded.key), "twins", {}).values():
            if not _WARM_STOP.is_set():
                towers.append(load_image_tower(twin, loaded.device))
        for tower in towers if loaded.precision == "bf16" else []:
            if not _WARM_STOP.is_set():
                bf16_twin(tower)
        from ..pipeline import budget

        if not _WARM_STOP.is_set():
            budget.pass_times(loaded)  # what the cost estimate of every request divides by
    except Exception:  # a twin that cannot be loaded says so when it is chosen; warming up is best effort
        log.info("warm-up of %s stopped early", model_key, exc_info=True)


def build_demo(model: str | None = None) -> gr.Blocks:
    """Build the page. `model`: a zoo key or model id; default $DEMO_MODEL, else the offline teaching model."""
    exact_float32()  # answers on a GPU match the published fp32 numbers quoted beside them
    startup = models.startup_key(model)
    choices = models.choices(startup)
    allowed = {key for _, key in choices}
    status, teaching = startup_status(startup, allowed)
    with App(title=TITLE, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(assets.content("header") or f"# {TITLE}")
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                page = panels.Page()
                image, labels = panels.default_example(teaching)
                if teaching:  # the scenes are measured on the teaching model's world
                    panels.build_scenes(page)
                with gr.Row(equal_height=False):
                    note, seen, warning = model_status.seen_by_model(
                        image, model_status.answering_model(startup, allowed=allowed), allowed=allowed)
                    panels.build_input(page, image, seen)
                    # The selector shows the model that answers (the teaching model after a fallback).
                    panels.build_labels(page, choices, model_status.answering_model(startup, allowed=allowed), status,
                                        teaching, labels, assets.example_class(image))
                    panels.build_run(page, handlers.defense_starts(startup, allowed=allowed))
                panels.build_results(page)
            with gr.Tab("Learn", id="learn"):
                learn.build()
        page.input_note.value = note
        page.world_note.value = warning
        # The teaching model's pass costs take 0.2 s to measure and ZeroGPU's are estimated (nothing is measured
        # in the background there); a real-size model's take 20-30 s on a CPU.
        if teaching or zerogpu.on_zerogpu():
            page.estimate.value = handlers.estimate(
                page.model.value, page.attack.value, page.eps.value, page.steps.value, page.mode.value,
                *(page.defenses[p].value for p in PARADIGMS), "{}", "{}", allowed=allowed)
        else:
            page.estimate.value = ("Cost of **Run all**: this machine's speed is being measured in the background; "
                                   "change any setting to see the estimate.")
        wiring.wire(page, allowed)
        wiring.wire_links(demo, page)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    if zerogpu.on_zerogpu():
        # Nothing to warm up: `models.preload` loaded every offered model and twin at startup, the pass costs
        # are estimates and bf16 is for CPUs. And `spaces`' CUDA stand-in holds only in the main thread: in
        # this thread every model reports the CPU, so it would build each twin again on the CPU, holding the
        # model cache's locks while requests fork GPU workers, which would then wait on them for good.
        return demo
    warm = threading.Thread(target=_warm_up, args=(model_status.answering_model(startup, allowed=allowed), allowed),
                            name="warm-up", daemon=True)
    warm.start()
    # A process that exits while the thread is inside a tensor operation would abort; let it finish its step.
    atexit.register(_stop_warm_up, warm)
    return demo
