"""The Explore tab's components by name: the page as its panels fill it, and how events find their
inputs (a handler's parameter names) and outputs (a view's field names) on it."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import gradio as gr

from ..defenses.base import Paradigm
from ..pipeline import PARADIGMS
from .components import ImageInput


@dataclass
class ParamGroup:
    kind: str        # "attack" or "defense"
    owner: str       # registry name
    group: gr.Group
    controls: dict   # field name -> component


@dataclass
class ColumnPanel:
    image: gr.Image
    label: gr.Label
    verdict: gr.HTML

    @property
    def outputs(self) -> list:
        return [self.image, self.label, self.verdict]


@dataclass
class Page:
    image: ImageInput = None
    input_note: gr.Markdown = None
    model_view: gr.Image = None
    model: gr.Dropdown = None
    model_status: gr.Markdown = None
    teaching_note: gr.Group = None
    teaching_labels_btn: gr.Button = None
    preset: gr.Dropdown = None
    labels: gr.Textbox = None
    true_label: gr.Dropdown = None
    classify_btn: gr.Button = None
    attack: gr.Dropdown = None
    eps: gr.Slider = None
    steps: gr.Slider = None
    target: gr.Dropdown = None
    mode: gr.Radio = None
    crafted_on: gr.Dropdown = None
    seed: gr.Number = None
    defenses: dict = field(default_factory=dict)        # Paradigm -> Dropdown
    defense_info: dict = field(default_factory=dict)    # Paradigm -> Markdown
    param_groups: list = field(default_factory=list)    # [ParamGroup]
    attack_json: gr.Textbox = None
    defense_json: gr.Textbox = None
    attack_btn: gr.Button = None
    defend_btn: gr.Button = None
    run_btn: gr.Button = None
    estimate: gr.Markdown = None
    stop_btn: gr.Button = None
    run_state: gr.Markdown = None
    share_btn: gr.Button = None
    scene_btns: list = field(default_factory=list)      # [(Button, Scene)]
    scene_note: gr.Markdown = None
    presenter_btn: gr.Button = None
    share_link: gr.Textbox = None
    columns: dict = field(default_factory=dict)         # result column field -> ColumnPanel
    world_note: gr.Markdown = None                      # "this model cannot know this image"
    strip: gr.HTML = None                               # every verdict in one line
    summary: gr.Markdown = None
    heatmap: gr.Image = None
    changes: gr.Image = None
    timing_chart: gr.Image = None
    timing_table: gr.Dataframe = None
    adversarial_file: gr.File = None
    results_file: gr.File = None
    result_json: gr.JSON = None
    result_json_btn: gr.Button = None
    curve_eps: gr.Textbox = None
    steps_btn: gr.Button = None
    steps_state: gr.State = None
    steps_slider: gr.Slider = None
    steps_frame: gr.Image = None
    steps_heatmap: gr.Image = None
    steps_chart: gr.Image = None
    steps_caption: gr.Markdown = None
    curve_btn: gr.Button = None
    curve_chart: gr.Image = None
    curve_table: gr.Dataframe = None
    curve_file: gr.File = None
    n_images: gr.Slider = None
    population_btn: gr.Button = None
    population_table: gr.Dataframe = None
    population_summary: gr.Markdown = None
    population_json: gr.JSON = None
    example_sets: list = field(default_factory=list)   # [(Gallery, [(path, caption, labels)])]


    def component(self, name: str):
        """The control behind a handler parameter, or the output behind a view field that is no result
        column (a parameter named after a paradigm is its defense dropdown)."""
        if name in PARAMETERS:
            name = PARAMETERS[name]
        if name in {p.value.replace("-", "_") for p in PARADIGMS}:
            return self.defenses[Paradigm(name.replace("_", "-"))]
        if name == "adversarial":
            return self.columns["attacked"].image
        return getattr(self, name)

    def inputs(self, handler) -> list:
        """The components a handler reads, in the order of its positional parameters (the API's names)."""
        params = inspect.signature(handler).parameters.values()
        return [self.component(p.name) for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

    def outputs(self, view) -> list:
        """The components a view type fills, in the order of its fields: a result column's three, or the
        component of the same name."""
        return [o for name in view._fields
                for o in (self.columns[name].outputs if name in self.columns else [self.component(name)])]


# Handler parameter -> Page field, where the two names differ.
PARAMETERS = {"labels_text": "labels", "model_key": "model", "attack_name": "attack", "attack_params": "attack_json",
              "defense_params": "defense_json", "eps_list": "curve_eps"}
