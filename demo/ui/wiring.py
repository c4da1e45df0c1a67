"""Events of the Explore tab: which handler runs on which click, with which inputs and outputs.

Long handlers show a progress bar and can be stopped (see `jobs`). Heavy requests share one compute slot
(see `demo.pipeline.budget`), so on a 2-core machine two heavy runs never fight over the cores, while a
cheap request (a classification, a one-step attack) runs beside them instead of waiting.
"""
from __future__ import annotations

import json

import gradio as gr

from ..pipeline import PARADIGMS
from ..registry import ATTACKS, DEFENSES
from . import assets, explore, handlers, model_status, views
from . import crafted, jobs, many, scenes
from .events import clean_first_event, gpu_event, long_event, quick_event, stream_event
from .panels import Page, defense_note, eps_slider_spec, steps_slider_spec

COMPUTE = "compute"     # concurrency group of the heavy events
LIGHT = "light"
LIGHT_LIMIT = 4
# A run brings the results into view and clears the stale mark; Stop sets it, which also shows the
# "stopped" note (CSS in components.py).
START_JS = """() => {
  const r = document.getElementById('results-area');
  if (r) { r.classList.remove('stale'); r.scrollIntoView({behavior: 'smooth', block: 'start'}); }
}"""
PRESENTER_FROM_URL = ("() => { const v = new URLSearchParams(window.location.search).get('presenter'); "
                      "if (v && v !== '0') document.body.classList.add('presenter'); }")
STOP_JS = "() => { document.getElementById('results-area')?.classList.add('stale'); }"


def _collector(page: Page):
    """Reads every parameter control into the two JSON texts the long events take (UI units)."""
    groups = page.param_groups
    controls = [c for g in groups for c in g.controls.values()]

    def collect(attack, training_time, test_time, training_free, *values):
        it = iter(values)
        chosen = {"attack": {attack}, "defense": {training_time, test_time, training_free}}
        out = {"attack": {}, "defense": {}}
        for g in groups:
            vals = {name: next(it) for name in g.controls}
            if g.owner in chosen[g.kind] and vals:
                out[g.kind][g.owner] = vals
        return json.dumps(out["attack"].get(attack, {})), json.dumps(out["defense"])

    inputs = [page.attack] + [page.defenses[p] for p in PARADIGMS] + controls
    return collect, inputs, [page.attack_json, page.defense_json]


def collect_js(page: Page) -> str:
    """`_collector`'s collect as a browser function: the buttons' first step then needs no round trip to
    the server, which brings the first result about one request sooner. Same inputs, same JSON."""
    layout = json.dumps([[g.kind, g.owner, list(g.controls)] for g in page.param_groups])
    return f"""(attack, trainingTime, testTime, trainingFree, ...values) => {{
  const chosen = {{attack: [attack], defense: [trainingTime, testTime, trainingFree]}};
  const out = {{attack: {{}}, defense: {{}}}};
  let i = 0;
  for (const [kind, owner, names] of {layout}) {{
    const vals = {{}};
    for (const name of names) vals[name] = values[i++];
    if (names.length && chosen[kind].includes(owner)) out[kind][owner] = vals;
  }}
  return [JSON.stringify(out.attack[attack] || {{}}), JSON.stringify(out.defense)];
}}"""


def _label_choices(text, true_label, target):
    labels = handlers.parse_labels(text)
    keep_true = true_label if true_label in labels else handlers.AUTO_TRUE
    keep_target = target if target in labels else handlers.NO_TARGET
    return (gr.Dropdown(choices=[handlers.AUTO_TRUE] + labels, value=keep_true),
            gr.Dropdown(choices=[handlers.NO_TARGET] + labels, value=keep_target))


def _attack_changed(page: Page):
    attack_groups = [g for g in page.param_groups if g.kind == "attack"]

    def changed(name):
        if name not in ATTACKS:
            return [gr.skip()] * (3 + len(attack_groups))
        targeted = ATTACKS.get(name).supports_targeted
        return [gr.Slider(**eps_slider_spec(name)), gr.Slider(**steps_slider_spec(name)),
                gr.Dropdown(interactive=targeted, info="Targeted: make the model say this label." if targeted
                            else "This attack has no targeted mode.")] + \
               [gr.Group(visible=g.owner == name) for g in attack_groups]

    return changed, [page.eps, page.steps, page.target] + [g.group for g in attack_groups]


def _defense_changed(page: Page, paradigm):
    groups = [g for g in page.param_groups if g.kind == "defense" and g.owner in
              DEFENSES.names(lambda c: c.paradigm == paradigm)]

    def changed(name):
        note = defense_note(name) if name in DEFENSES and name != "none" else ""
        return [note] + [gr.Group(visible=g.owner == name) for g in groups]

    return changed, [page.defense_info[paradigm]] + [g.group for g in groups]


def wire(page: Page, allowed: set[str]) -> None:
    clean_outputs = page.columns["clean"].outputs
    every_column = [o for c in page.columns.values() for o in c.outputs]
    private = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}

    # Settings that reshape other controls.
    page.labels.change(_label_choices, [page.labels, page.true_label, page.target], [page.true_label, page.target],
                       trigger_mode="always_last", **private)
    page.preset.input(assets.preset_text, page.preset, page.labels, **private)
    page.teaching_labels_btn.click(lambda: (assets.TEACHING_PRESET, assets.preset_text(assets.TEACHING_PRESET)),
                                   None, [page.preset, page.labels], **private)
    for gallery, rows in page.example_sets:
        def pick(evt: gr.SelectData, rows=rows):
            path, _, labels = rows[evt.index]
            return path, labels, true_label_update(labels, assets.example_class(path))

        gallery.select(pick, None, [page.image, page.labels, page.true_label], **private)
    # A picture of one's own: its class is unknown until the user names it (an example's class would lie).
    page.image.upload(lambda: handlers.AUTO_TRUE, None, page.true_label, **private)
    fn, outs = _attack_changed(page)
    # An input event: a shared link sets the attack and its budget together (`wire_links`), and a change
    # event would then reset the budget to the attack's default.
    page.attack.input(fn, page.attack, outs, **private)
    for paradigm in PARADIGMS:
        fn, outs = _defense_changed(page, paradigm)
        page.defenses[paradigm].change(fn, page.defenses[paradigm], outs, **private)

    def model_changed(key):
        status, teaching = model_status.select_model(key, allowed=allowed)
        # The selector shows the model that really answers (after a fallback, not the one asked for);
        # the status line says why. Set by value, so it does not fire this listener (an input event) again.
        actual = model_status.answering_model(key, allowed=allowed)
        return status, gr.Group(visible=teaching), gr.Dropdown(value=actual) if actual != key else gr.skip()

    page.model.input(gpu_event(model_changed), page.model, [page.model_status, page.teaching_note, page.model],
                     api_name="load_model", concurrency_id=LIGHT, concurrency_limit=LIGHT_LIMIT)
    view_controls = [(g.owner, g.controls["views"]) for g in page.param_groups
                     if g.kind == "defense" and g.owner in handlers.VIEW_DEFENSES and "views" in g.controls]

    def views_for_model(key):
        starts = handlers.defense_starts(key, allowed=allowed)
        return [gr.Slider(value=starts[owner]["views"]) if owner in starts else gr.skip() for owner, _ in view_controls]

    page.model.change(lambda key: gr.Dropdown(choices=crafted.choices(key), value=crafted.SAME), page.model,
                      page.crafted_on, **private)
    if view_controls:
        page.model.change(gpu_event(views_for_model), page.model, [c for _, c in view_controls],
                          api_visibility="private",
                          concurrency_id=LIGHT, concurrency_limit=LIGHT_LIMIT)

    # Classification: on a click (the /classify endpoint) and whenever a new image arrives.
    classify = quick_event(handlers.classify, allowed)
    classify_inputs = page.inputs(handlers.classify)
    page.classify_btn.click(classify, classify_inputs, clean_outputs, api_name="classify",
                            concurrency_id=LIGHT, concurrency_limit=LIGHT_LIMIT)
    empty = tuple(v for _ in range(len(page.columns) - 1) for v in views.EMPTY_COLUMN) + ("",)

    def auto_classify(image, *rest):
        # A new image makes every earlier result stale, including the attacked image "Defend" would use.
        if image is None:
            return (None, None, "") + empty
        return classify(image, *rest) + empty

    ev_new_image = page.image.change(auto_classify, classify_inputs, every_column + [page.strip],
                                     api_visibility="private", concurrency_id=LIGHT, concurrency_limit=LIGHT_LIMIT)

    # The page runs one button's listeners in the order they were added, awaiting each answer that does not
    # go through the queue. So the browser-only mark comes first and the clean-column shortcut last: behind
    # it, a Stop pressed while the clean column was computed would be undone by a late start mark, and the
    # run it meant to stop would only be submitted afterwards.
    # Run all rewrites every column, so a still-pending clear for a just-picked image must not land after
    # its first results; Attack and Defend leave some columns alone, so there the clear still has to land.
    page.run_btn.click(None, None, None, js=START_JS, cancels=[ev_new_image], **private)
    for button in (page.attack_btn, page.defend_btn):
        button.click(None, None, None, js=START_JS, **private)
    page.stop_btn.click(None, None, None, js=STOP_JS, **private)

    def seen(image, key):
        return model_status.seen_by_model(image, key, allowed=allowed)

    for change in (page.image.change, page.model.change):  # a model of another input size sees another picture
        change(gpu_event(seen), [page.image, page.model], [page.input_note, page.model_view, page.world_note],
               api_visibility="private", concurrency_id=LIGHT, concurrency_limit=LIGHT_LIMIT)

    collect, collect_inputs, collect_outputs = _collector(page)
    collect_in_browser = collect_js(page)
    estimate_inputs = [page.model, page.eps, page.steps, page.mode] + collect_inputs

    def show_estimate(model, eps, steps, mode, attack, training_time, test_time, training_free, *values):
        attack_json, defense_json = collect(attack, training_time, test_time, training_free, *values)
        return handlers.estimate(model, attack, eps, steps, mode, training_time, test_time, training_free,
                                 attack_json, defense_json, allowed=allowed)

    gr.on([c.change for c in estimate_inputs], show_estimate, estimate_inputs, page.estimate,
          api_visibility="private", queue=False, show_progress="hidden")
    heavy = {"concurrency_id": COMPUTE, "concurrency_limit": jobs.LONG_EVENTS}
    token = gr.State(jobs.new_token())

    def chained(button, handler, inputs, outputs, api_name, progress_on, stream=False):
        step = button.click(None, collect_inputs, collect_outputs, js=collect_in_browser, **private)
        # One progress bar per result panel is enough; on every output it would repeat a dozen times.
        event = (stream_event if stream else long_event)(handler, allowed)
        return step.then(event, inputs + [token], outputs, api_name=api_name, show_progress_on=progress_on, **heavy)

    def images(view) -> list:  # one progress bar per result column, on its image
        return [page.columns[f].image for f in view._fields if f in page.columns]

    # Inputs follow each handler's parameter names and outputs each view's field names (`Page.inputs`,
    # `Page.outputs`), so a new column or output is wired by naming it, not by its position in a list.
    ev_attack = chained(page.attack_btn, handlers.attack, page.inputs(handlers.attack),
                        page.outputs(handlers.AttackView), "attack", images(handlers.AttackView))
    ev_defend = chained(page.defend_btn, handlers.defend, page.inputs(handlers.defend),
                        page.outputs(handlers.DefendView), "defend", images(handlers.DefendView))
    compare_inputs = page.inputs(handlers.compare)
    ev_compare = chained(page.run_btn, handlers.compare, compare_inputs, page.outputs(handlers.CompareView),
                         "compare", images(handlers.CompareView), stream=True)

    # The same comparison as one JSON document, for scripts (no button: API only).
    ev_json = page.result_json_btn.click(long_event(handlers.compare_json, allowed), compare_inputs + [token],
                                         page.result_json, api_name="compare_json", show_progress="hidden", **heavy)

    curve_outputs = [page.curve_chart, page.curve_table, page.curve_file]
    ev_curve = chained(page.curve_btn, explore.curve, page.inputs(explore.curve), curve_outputs, "curve",
                       [page.curve_chart])

    ev_population = chained(page.population_btn, many.population, page.inputs(many.population),
                            page.outputs(many.PopulationView), "population", [page.population_table], stream=True)

    clean_first = clean_first_event(classify, LIGHT_LIMIT)
    page.run_btn.click(clean_first, classify_inputs, clean_outputs, api_visibility="private", show_progress="hidden",
                       queue=False)
    steps_inputs = page.inputs(explore.record_steps)
    steps_outputs = [page.steps_state, page.steps_slider, page.steps_frame, page.steps_heatmap, page.steps_chart,
                     page.steps_caption]
    ev_steps = chained(page.steps_btn, explore.record_steps, steps_inputs, steps_outputs, "attack_steps",
                       [page.steps_frame])
    scrub = lambda state, k: explore.show_step(state, k)  # noqa: E731
    page.steps_slider.input(scrub, [page.steps_state, page.steps_slider],
                            [page.steps_frame, page.steps_heatmap, page.steps_chart, page.steps_caption],
                            trigger_mode="always_last", api_visibility="private", concurrency_id=LIGHT,
                            concurrency_limit=LIGHT_LIMIT)

    # Two listeners: the flag must be set at once, while dropping the event waits for the run to end.
    page.stop_btn.click(jobs.request_stop, token, None, **private)
    page.stop_btn.click(None, None, None, cancels=[ev_attack, ev_defend, ev_compare, ev_curve, ev_json, ev_steps,
                                                      ev_population],
                        api_visibility="private", queue=False)


def true_label_update(labels_text: str, true_label: str | None):
    """The true-label dropdown for these labels, set to `true_label` when it is one of them."""
    labels = handlers.parse_labels(labels_text)
    return gr.Dropdown(choices=[handlers.AUTO_TRUE] + labels,
                       value=true_label if true_label in labels else handlers.AUTO_TRUE)


def setup_controls(page: Page) -> list:
    """The controls a shared link (or a lesson scene) sets, in `setup_updates` order."""
    attack_groups = [g.group for g in page.param_groups if g.kind == "attack"]
    return ([page.image, page.labels, page.attack, page.eps, page.steps, page.target, page.mode, page.seed]
            + [page.defenses[p] for p in PARADIGMS] + attack_groups + [page.true_label, page.crafted_on])


def setup_updates(page: Page, values: dict) -> list:
    """Updates for `setup_controls` from `share.apply_query`-style values; gr.skip() where none is given."""
    attack = values.get("attack")
    eps_u = steps_u = target_u = gr.skip()
    groups = [gr.skip() for g in page.param_groups if g.kind == "attack"]
    if attack:
        eps_u, steps_u, target_u, *groups = _attack_changed(page)[0](attack)
    if "eps" in values:
        eps_u = gr.Slider(**{**eps_slider_spec(attack), "value": values["eps"]}) if attack else gr.Slider(value=values["eps"])
    # An attack without steps (random noise) keeps its hidden slider: a scene's shared steps would not fit it.
    if "steps" in values and not (attack and "steps" not in {f.name for f in ATTACKS.get(attack).params()}):
        steps_u = gr.Slider(**{**steps_slider_spec(attack), "value": values["steps"]}) if attack else \
            gr.Slider(value=values["steps"])
    get = lambda k: values[k] if k in values else gr.skip()  # noqa: E731
    true_u = true_label_update(values["labels"], values.get("true")) if "labels" in values else gr.skip()
    return ([get("image"), get("labels"), gr.skip() if not attack else attack, eps_u, steps_u, target_u, get("mode"),
             get("seed")] + [get(p.value) for p in PARADIGMS] + groups + [true_u, get("crafted")])


def wire_links(demo: gr.Blocks, page: Page) -> None:
    """Share this setup as a link, and apply a link's setup when the page opens."""
    from . import share

    private = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    inputs = [page.image, page.labels, page.attack, page.eps, page.steps, page.mode, page.seed] + \
        [page.defenses[p] for p in PARADIGMS] + [page.true_label, page.crafted_on]
    page.share_btn.click(share.share_query, inputs, page.share_link, **private).then(
        None, page.share_link, page.share_link, js="(q) => window.location.href.split('?')[0] + q", **private)

    def opened(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        return setup_updates(page, share.apply_query(query))

    demo.load(opened, None, setup_controls(page), **private)
    demo.load(None, None, None, js=PRESENTER_FROM_URL, **private)
    if page.presenter_btn is not None:
        page.presenter_btn.click(None, None, None, js="() => { document.body.classList.toggle('presenter'); }",
                                 **private)

    for button, scene in page.scene_btns:
        def play(model_key, scene=scene):
            measured = scenes.fill(scene.population)
            where = "" if model_key == scenes.MEASURED_ON else " on the ResNet teaching model"
            note = f"**{scene.title}.** {scene.notice}" + (f"  \n*Measured{where}:* {measured}" if measured else "")
            extra = scenes.model_note(scene, model_key)
            note += f"  \n{extra}" if extra else ""
            return setup_updates(page, share.apply_query(scene.query())) + [note]

        # The run starts once the new settings are on the page (a click on the primary button, so it is
        # the same run, with its progress, scroll and Stop).
        button.click(play, page.model, setup_controls(page) + [page.scene_note], **private).then(
            None, None, None, js="() => setTimeout(() => document.getElementById('run-btn')?.click(), 300)",
            **private)
