"""Crafted on another model: the attack is made on a source model and answered by the chosen one."""
import gradio as gr
import pytest

from demo.ui import crafted, handlers

pytestmark = pytest.mark.usefixtures("one_thread")
TEACHING = {"teaching", "teaching-vit"}
LABELS = "circle\nsquare\ntriangle\nstar"


def compare_json(image_file, model_key="teaching", allowed=TEACHING, **overrides):
    kwargs = dict(image=image_file, labels_text=LABELS, true_label=handlers.AUTO_TRUE, model_key=model_key,
                  attack_name="pgd", eps=8, steps=3, target=handlers.NO_TARGET, mode="oblivious", seed=0,
                  training_time="none", test_time="none", training_free="bit_depth", attack_params="{}",
                  defense_params="{}")
    kwargs.update(overrides)
    return handlers.compare_json(**kwargs, allowed=allowed)


def test_choices_offer_the_other_tower_and_the_twins():
    values = [v for _, v in crafted.choices("teaching")]
    assert values[0] == crafted.SAME and "teaching-vit" in values and "teaching" not in values
    assert "twin:tecoa" in values
    assert [v for _, v in crafted.choices("local-dir:/nowhere")] == [crafted.SAME]


def test_crafted_on_the_other_tower_is_a_transfer(image_file, teaching_model):
    same = compare_json(image_file)
    moved = compare_json(image_file, crafted_on="teaching-vit")
    assert same["crafted_on"] == moved["model_label"] != moved["crafted_on"]
    assert "crafted on" in moved["columns"][1]["title"]
    # the image the ViT crafted is not the one the ResNet crafted on itself
    assert moved["attack"]["linf_255"] <= 8 + 1e-6
    assert [c["top5"] for c in moved["columns"][1:]] != [c["top5"] for c in same["columns"][1:]]


def test_a_transfer_cannot_be_adaptive_and_unknown_sources_are_refused(image_file, teaching_model):
    with pytest.raises(gr.Error, match="oblivious"):
        compare_json(image_file, mode="adaptive", crafted_on="teaching-vit")
    with pytest.raises(gr.Error, match="cannot be crafted on"):
        compare_json(image_file, crafted_on="vit-l-14")
