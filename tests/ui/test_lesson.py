"""The page opens on a lesson that shows: the default example, attacked with the default attack, fools the
undefended model, and each preselected defense gets the label back (measured, not assumed)."""
from __future__ import annotations

import pytest
from PIL import Image

from demo import pipeline
from demo.ui import panels, scenes, share


def test_the_default_comparison_shows_all_three_paradigms_at_work(teaching_model):
    path, labels_text = panels.default_example(teaching=True)
    labels = labels_text.splitlines()
    x = pipeline.to_model_input(teaching_model, Image.open(path))
    defaults = {p: (name, {}) for p, name in panels.DEFAULT_DEFENSES.items()}
    result = pipeline.run_comparison(teaching_model, x, labels, None, panels.DEFAULT_ATTACK, {}, None, defaults)
    clean, attacked, *defended = result.columns
    assert clean.pred_label == "cyan triangle" and clean.true_prob > 0.9, "the model must know the example well"
    assert not attacked.correct, "the default attack must fool the undefended model"
    for column in defended:
        assert column.correct, f"{column.title} ({column.defense}) does not get the default example back"
    assert {c.defense for c in defended} == {"tecoa", "rtpt", "jpeg"}


@pytest.mark.parametrize("scene", scenes.SCENES, ids=lambda s: s.title)
def test_each_lesson_scene_shows_what_it_says(scene, teaching_model):
    for changes, column, correct in scene.claims:
        values = share.apply_query(scene.query(**changes))
        assert {"image", "labels", "attack", "eps", "steps", "mode"} <= set(values), "the scene must set everything"
        x = pipeline.to_model_input(teaching_model, Image.open(values["image"]))
        defenses = {p: (values[p.value], {}) for p in pipeline.PARADIGMS if values[p.value] != "none"}
        labels = values["labels"].splitlines()
        assert values["true"] in labels, "an example's class is its true label"
        result = pipeline.run_comparison(teaching_model, x, labels, labels.index(values["true"]), values["attack"],
                                         {"eps": values["eps"] / 255, "steps": values["steps"]}, None, defenses,
                                         values["mode"] == "adaptive", values["seed"])
        col = result.column(column)
        assert col.correct == correct, (f"{scene.title!r} promises {column} {'right' if correct else 'wrong'} "
                                        f"with {changes or 'its setup'}; it says {col.pred_label}")


@pytest.mark.parametrize("scene", scenes.SCENES, ids=lambda s: s.title)
def test_each_scene_quotes_its_population_number(scene):
    """The one-image lesson comes with the measured number on many images, read from docs/results."""
    from demo.eval import published

    assert scene.population, "a scene without its population number teaches from one image only"
    text = published.fill(scene.population)
    assert "n/a" not in text and "{{" not in text, f"{scene.title!r} quotes a number docs/results does not hold: {text}"
    assert text.count("%") >= 2
