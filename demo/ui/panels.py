"""The Explore tab's panels: input, attack, defenses, results. Layout only; events are in `wiring`."""
from __future__ import annotations

import gradio as gr

from ..defenses.base import Paradigm
from .. import pipeline
from ..attacks.base import display_scale
from ..pipeline import PARADIGMS
from ..registry import ATTACKS, DEFENSES
from . import assets, crafted, explore, handlers, views
from .page import ColumnPanel, Page, ParamGroup  # noqa: F401  (the page's panels fill these)
from .components import ImageInput, NumberBox, NumberSlider, figure_box, image_box, param_control

DEFAULT_ATTACK = "pgd"
STOPPED = ("**Stopped.** The results below (greyed) are from an earlier run and may not match the settings "
           "above; press **Run all** for new ones.")
DEFAULT_TEACHING_EXAMPLE, DEFAULT_PHOTO_EXAMPLE = "cyan triangle", "apple"
DEFAULT_DEFENSES = pipeline.DEFAULT_DEFENSES  # one per paradigm, preselected
PARADIGM_TITLES = {Paradigm(c.key): c.title for c in views.DEFENSE_COLUMNS}
# Controls the attack row always shows; the others go under "More attack settings".
SHARED_ATTACK_PARAMS = ("eps", "steps")


def defense_choices(paradigm: Paradigm) -> list[tuple[str, str]]:
    names = ["none"] + DEFENSES.names(lambda c: c.paradigm == paradigm and c.name != "none")
    return [(DEFENSES.get(n).title or n, n) for n in names]


def defense_note(name: str) -> str:
    cls = DEFENSES.get(name)
    parts = [f"*{cls.reference}*" if cls.reference else "", f"Here: {cls.deviation}" if cls.deviation else ""]
    return "  \n".join(p for p in parts if p)


def default_example(teaching: bool) -> tuple[str | None, str | None]:
    """(image path, its labels) the page opens with: an example the model answers with confidence, and
    on which, attacked with the default PGD, each preselected defense gets the label back (measured in
    tests/ui/test_lesson.py), so the first "Run all" shows the whole lesson."""
    kind, name = ("teaching", DEFAULT_TEACHING_EXAMPLE) if teaching else ("photo", DEFAULT_PHOTO_EXAMPLE)
    for path, caption, labels in assets.examples(kind):
        if caption == name:
            return path, labels
    rows = assets.examples(kind)
    return (rows[0][0], rows[0][2]) if rows else (None, None)


def build_scenes(page: Page) -> None:
    """One-click lessons: each sets the example, attack, mode and defenses, runs them and says what to notice."""
    from .scenes import SCENES

    with gr.Row(elem_id="scenes"):
        gr.Markdown("**Lessons, one click each:**", elem_classes=["scenes-title"])
        for i, scene in enumerate(SCENES):
            page.scene_btns.append((gr.Button(scene.title, size="sm", elem_id=f"scene-{i}"), scene))
        page.presenter_btn = gr.Button("Presenter mode", size="sm", elem_id="presenter-btn", variant="secondary")
    page.scene_note = gr.Markdown("", elem_id="scene-note")


def build_input(page: Page, image: str | None = None, seen=None) -> None:
    """The upload and the examples; `seen`: what the model classifies of `image` (RGB uint8)."""
    with gr.Column(scale=1, min_width=300):
        gr.Markdown("### 1. Image")
        page.image = image_box(value=image, label="Image to classify", sources=["upload", "clipboard", "webcam"],
                               height=240, elem_id="input-image")
        # What the model classifies, next to the upload: a photo is cropped and shrunk before CLIP sees it.
        with gr.Row(equal_height=False, elem_id="model-input"):
            page.model_view = image_box(value=seen, label="What the model sees", show_label=False, interactive=False,
                                        height=110, scale=0,
                                        min_width=120, buttons=["fullscreen"], elem_id="model-view",
                                        elem_classes=["result-image"],
                                        alt_text="The image after the model's crop and resize: exactly what it classifies")
            page.input_note = gr.Markdown("", elem_id="input-note", elem_classes=["method"])
        build_examples(page)


def build_examples(page: Page) -> None:
    """Example galleries; clicking a picture loads it together with the labels that fit it."""
    page.example_sets = []
    for kind, title in (("teaching", "Teaching-world examples (the teaching model knows these)"),
                        ("photo", "Photo-like examples (for real CLIP models)")):
        rows = assets.examples(kind)
        if rows:
            # A heading instead of the gallery's own label, which lies over the first row of pictures.
            gr.Markdown(f"**{title}**", elem_classes=["gallery-title"])
            gallery = gr.Gallery([(p, c) for p, c, _ in rows], label=title, show_label=False, columns=4, height="auto",
                                 allow_preview=False, object_fit="contain", format="png",
                                 elem_id=f"examples-{kind}", interactive=False)
            page.example_sets.append((gallery, rows))


def build_labels(page: Page, model_choices, startup: str, status: str, teaching: bool,
                 labels: str | None = None, true_label: str | None = None) -> None:
    with gr.Column(scale=1, min_width=300, elem_id="labels-panel"):
        gr.Markdown("### 2. Model and labels")
        page.model = gr.Dropdown(choices=model_choices, value=startup, label="Model", elem_id="model")
        page.model_status = gr.Markdown(status, elem_id="model-status")
        with gr.Group(visible=teaching, elem_classes=["teaching-note"]) as page.teaching_note:
            with gr.Accordion("You are using the offline teaching model: what it knows", open=False):
                gr.Markdown(assets.content("teaching_model"))
            page.teaching_labels_btn = gr.Button("Use the teaching world's labels", size="sm")
        presets = assets.presets()
        fallback = "common_objects" if "common_objects" in presets else next(iter(presets), None)
        default_preset = assets.TEACHING_PRESET if teaching and assets.TEACHING_PRESET in presets else fallback
        page.preset = gr.Dropdown(choices=[(title, pid) for pid, (title, _) in presets.items()], value=default_preset,
                                  label="Label preset")
        if labels is None:
            labels = assets.preset_text(default_preset) if default_preset else ""
        page.labels = gr.Textbox(value=labels, lines=5, max_lines=14, label="Candidate labels",
                                 info="One per line (or comma-separated on one line); 2 to 100 labels.",
                                 elem_id="labels")
        choices = handlers.parse_labels(labels)
        page.true_label = gr.Dropdown(choices=[handlers.AUTO_TRUE] + choices,
                                      value=true_label if true_label in choices else handlers.AUTO_TRUE,
                                      allow_custom_value=True, label="True label",
                                      info="Used to judge right or wrong; set by an example, otherwise the clean "
                                           "prediction unless you pick one.")
        page.classify_btn = gr.Button("Classify", elem_id="classify-btn")


def _param_groups(page: Page, kind: str, names: list[str], selected: str, starts: dict | None = None) -> None:
    """Controls per method; `starts` ({method: {field: value}}) replaces defaults for the loaded model."""
    registry = ATTACKS if kind == "attack" else DEFENSES
    for name in names:
        cls = registry.get(name)
        fields = [f for f in cls.params() if not (kind == "attack" and f.name in SHARED_ATTACK_PARAMS)]
        with gr.Group(visible=name == selected) as group:
            controls = {}
            for f in fields:
                control = param_control(f, value=(starts or {}).get(name, {}).get(f.name))
                if control is not None:
                    controls[f.name] = control
        page.param_groups.append(ParamGroup(kind, name, group, controls))


def eps_slider_spec(name: str) -> dict:
    """Slider settings for the selected attack's budget (in /255 when the attack declares that unit)."""
    f = next((f for f in ATTACKS.get(name).params() if f.name == "eps"), None)
    if f is None:
        return {"visible": False, "value": 0, "minimum": 0, "maximum": 1, "step": 1, "label": "epsilon"}
    scale = display_scale(f)
    unit = f" ({f.metadata['unit']})" if scale != 1.0 else ""
    return {"visible": True, "value": round(f.default * scale, 6), "minimum": round((f.metadata.get("lo") or 0) * scale, 6),
            "maximum": round(f.metadata.get("hi", f.default * 4) * scale, 6),
            "step": round((f.metadata.get("step") or 1 / 255) * scale, 6), "label": (f.metadata.get("label") or "epsilon") + unit}


def steps_slider_spec(name: str) -> dict:
    f = next((f for f in ATTACKS.get(name).params() if f.name == "steps"), None)
    if f is None:
        return {"visible": False, "value": 1, "minimum": 1, "maximum": 2, "step": 1, "label": "steps"}
    return {"visible": True, "value": f.default, "minimum": f.metadata.get("lo") or 1,
            "maximum": min(f.metadata.get("hi") or 100, 200), "step": 1, "label": f.metadata.get("label") or "steps"}


def build_run(page: Page, starts: dict | None = None) -> None:
    """The primary button first, then what it will run: the attack, the mode and one defense per paradigm.
    Everything else (target, seed, method parameters) is folded below them."""
    with gr.Column(scale=1, min_width=300):
        gr.Markdown("### 3. Attack and defend")
        with gr.Row():
            page.run_btn = gr.Button("Run all", variant="primary", elem_id="run-btn", scale=3)
            page.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn", scale=1)
        page.estimate = gr.Markdown("", elem_id="cost-estimate")
        names = ATTACKS.names()
        selected = DEFAULT_ATTACK if DEFAULT_ATTACK in names else (names[0] if names else None)
        page.attack = gr.Dropdown(choices=[(ATTACKS.get(n).title or n, n) for n in names], value=selected,
                                  label="Attack", elem_id="attack")
        eps = eps_slider_spec(selected) if selected else {"visible": False}
        steps = steps_slider_spec(selected) if selected else {"visible": False}
        # The server checks slider values against the range it was built with, for every caller
        # (API clients never see the per-attack narrowing), so that range covers every attack; the
        # library then checks the chosen attack's own range with a precise message.
        if names:
            eps["maximum"] = max(eps_slider_spec(n)["maximum"] for n in names)
            steps["maximum"] = max(steps_slider_spec(n)["maximum"] for n in names)
        with gr.Row():
            page.eps = NumberSlider(**{k: v for k, v in eps.items()}, elem_id="eps")
            page.steps = NumberSlider(**{k: v for k, v in steps.items()}, elem_id="steps")
        page.mode = gr.Radio([handlers.OBLIVIOUS, handlers.ADAPTIVE], value=handlers.OBLIVIOUS, label="Attack mode",
                             info="Adaptive: each defense is attacked through itself (BPDA/EOT).", elem_id="mode")
        page.crafted_on = gr.Dropdown(choices=crafted.choices(page.model.value if page.model else ""),
                                      value=crafted.SAME, label="Crafted on", allow_custom_value=True,
                                      info="Craft the attack on another model than the one that answers (a "
                                           "transfer attack; oblivious mode only).", elem_id="crafted-on")
        for paradigm in PARADIGMS:
            choices = defense_choices(paradigm)
            chosen = DEFAULT_DEFENSES.get(paradigm, "none")
            chosen = chosen if chosen in {n for _, n in choices} else "none"
            page.defenses[paradigm] = gr.Dropdown(choices=choices, value=chosen, label=PARADIGM_TITLES[paradigm],
                                                  elem_id=f"defense-{paradigm.value}")
            page.defense_info[paradigm] = gr.Markdown(defense_note(chosen) if chosen != "none" else "",
                                                      elem_classes=["method"])
            with gr.Accordion("Settings of the selected defense", open=False, elem_classes=["settings-fold"]):
                _param_groups(page, "defense", [n for _, n in choices if n != "none"], chosen, starts)
        with gr.Accordion("More attack settings", open=False, elem_classes=["settings-fold"]):
            page.target = gr.Dropdown(choices=[handlers.NO_TARGET] + handlers.parse_labels(page.labels.value),
                                      value=handlers.NO_TARGET, allow_custom_value=True, label="Target label (optional)",
                                      info="Targeted: make the model say this label.")
            page.seed = NumberBox(value=0, precision=0, minimum=0, label="Seed")
            _param_groups(page, "attack", names, selected)
            gr.Markdown("Run one stage at a time:")
            with gr.Row():
                page.attack_btn = gr.Button("Attack", elem_id="attack-btn", size="sm")
                page.defend_btn = gr.Button("Defend", elem_id="defend-btn", size="sm")
        with gr.Accordion("Share this setup", open=False, elem_classes=["settings-fold"]):
            page.share_btn = gr.Button("Make a link to this setup", size="sm", elem_id="share-btn")
            page.share_link = gr.Textbox(label="Link (example, labels, attack and defenses; uploads stay here)",
                                         buttons=["copy"], interactive=False, elem_id="share-link")
        page.attack_json = gr.Textbox(value="{}", visible=False, label="attack parameters (JSON)")
        page.defense_json = gr.Textbox(value="{}", visible=False, label="defense parameters (JSON)")


def build_results(page: Page) -> None:
    with gr.Column(elem_id="results-area"):
        _results(page)


def _results(page: Page) -> None:
    gr.Markdown("### Results", elem_id="results")
    page.run_state = gr.Markdown(STOPPED, elem_id="run-state")  # shown only while the results are stale
    page.world_note = gr.Markdown("", elem_id="world-note")
    page.strip = gr.HTML("", elem_id="verdict-strip")
    with gr.Row(equal_height=False):
        for i, column in enumerate(views.RESULT_COLUMNS):
            title = column.title
            with gr.Column(min_width=170, elem_id=f"col-{i}"):
                gr.Markdown(title, elem_classes=["column-title"])
                image = image_box(label=title, alt_text=f"{title}: the exact image this column's model classified",
                                  interactive=False, height=170, buttons=["download", "fullscreen"],
                                  show_label=False, elem_id=f"col-{i}-image", elem_classes=["result-image"])
                verdict = gr.HTML("", elem_id=f"col-{i}-verdict")
                label = gr.Label(num_top_classes=5, show_label=False, elem_id=f"col-{i}-label")
                page.columns[column.field] = ColumnPanel(image, label, verdict)
    page.summary = gr.Markdown("", elem_id="summary")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("**The perturbation** (left: amplified so it can be seen; right: its size per pixel)")
            page.heatmap = figure_box(label="Perturbation", elem_id="heatmap", elem_classes=["figure"])
        with gr.Column():
            gr.Markdown("**What each input-changing defense changed** (defenses that adapt prompts or embeddings "
                        "leave the image as it is)")
            page.changes = figure_box(label="Defense changes", elem_id="changes", elem_classes=["figure"])
    # The chart gets the full width (its labels stay readable on a projector), the table goes below it.
    page.timing_chart = figure_box(label="Time per stage", elem_id="timing-chart", elem_classes=["figure", "chart"])
    with gr.Row():
        page.timing_table = gr.Dataframe(headers=views.TIMING_HEADERS, interactive=False, wrap=True,
                                         column_widths=["52%", "16%", "14%", "18%"],
                                         label="Time (ms) and model passes per image, per stage",
                                         elem_id="timing-table")
    with gr.Row():
        page.adversarial_file = gr.File(label="Adversarial image (PNG, exactly what was classified)",
                                        elem_id="adversarial-file")
        page.results_file = gr.File(label="Results (JSON)", elem_id="results-file")
        # Targets of the /compare_json endpoint (scripts get the comparison as one dict); never shown.
        page.result_json = gr.JSON(visible=False)
        page.result_json_btn = gr.Button(visible=False)
    with gr.Accordion("Watch the attack work, step by step", open=False, elem_id="steps-panel"):
        gr.Markdown("Runs the chosen attack once on the undefended model and keeps its image at every step. "
                    "Drag the slider to see the image, what the attack has added so far, and how the true label's "
                    "probability and the loss move.")
        page.steps_btn = gr.Button("Record the attack's steps", elem_id="steps-btn")
        page.steps_state = gr.State(None)
        page.steps_slider = gr.Slider(0, 1, value=0, step=1, label="Step", interactive=False, elem_id="steps-slider")
        page.steps_caption = gr.Markdown("", elem_id="steps-caption")
        with gr.Row(equal_height=False):
            page.steps_frame = image_box(label="The image at this step", interactive=False, height=220,
                                         elem_id="steps-frame", elem_classes=["result-image"])
            page.steps_heatmap = figure_box(label="What the attack added so far", elem_id="steps-heatmap",
                                            elem_classes=["figure"])
        page.steps_chart = figure_box(label="True-label probability and loss per step", elem_id="steps-chart",
                                      elem_classes=["figure", "chart"])
    with gr.Accordion("Robustness curve for this image", open=False):
        with gr.Row():
            page.curve_eps = gr.Textbox(value=explore.DEFAULT_CURVE_EPS, label="eps values (in the attack's unit, /255 for L-inf)",
                                        elem_id="curve-eps")
            page.curve_btn = gr.Button("Compute curve", elem_id="curve-btn")
        page.curve_chart = figure_box(label="True-label probability vs eps", elem_id="curve-chart",
                                      elem_classes=["figure", "chart"])
        with gr.Row():
            page.curve_table = gr.Dataframe(headers=["model", "eps", "prediction", "correct", "true-label prob."],
                                            interactive=False, label="Curve points")
        page.curve_file = gr.File(label="Curve (JSON)")
    build_population(page)


def build_population(page: Page) -> None:
    """Many images at once: the setup above on N teaching-world images (`demo.ui.many`)."""
    from . import many
    from ..eval.population import DEFAULT_N, MAX_N

    with gr.Accordion("Many images at once: how often does it happen?", open=False, elem_id="population-panel"):
        gr.Markdown(many.panel_note())
        with gr.Row():
            page.n_images = gr.Slider(1, MAX_N, value=DEFAULT_N, step=1, label="Number of images",
                                      elem_id="n-images")
            page.population_btn = gr.Button("Run on many images", elem_id="population-btn")
        page.population_summary = gr.Markdown("", elem_id="population-summary")
        page.population_table = gr.Dataframe(headers=many.HEADERS, interactive=False, wrap=True,
                                             label="Accuracy per column", elem_id="population-table")
        with gr.Accordion("Per image (JSON)", open=False):
            page.population_json = gr.JSON(label="Population run", elem_id="population-json")
