"""The "Many images at once" panel: the page's setup on N teaching-world images, filled in as images finish."""
import gradio as gr
import pytest

from demo.pipeline import budget
from demo.eval.population import ColumnScore
from demo.ui import many

pytestmark = pytest.mark.usefixtures("one_thread")
TEACHING = {"teaching"}


def run(model_key="teaching", allowed=TEACHING, emit=None, **overrides):
    kwargs = dict(model_key=model_key, attack_name="pgd", eps=4, steps=2, mode="adaptive", seed=0,
                  training_time="none", test_time="none", training_free="bit_depth", attack_params="{}",
                  defense_params="{}", n_images=3)
    kwargs.update(overrides)
    return many.population(**kwargs, allowed=allowed, emit=emit)


def test_columns_fill_in_image_by_image_and_the_stack_is_the_last_column(teaching_model):
    partial = []
    view = run(emit=partial.append)
    assert [v.population_summary.split("**")[-2] for v in partial] == [
        "1 of 3 images done.", "2 of 3 images done.", "All 3 images done."]
    data = view.population_json
    assert [c["key"] for c in data["columns"]] == ["clean", "attacked", "training-free", "stacked"]
    assert len(data["per_image"]) == 3 and data["adaptive"]
    for row, col in zip(view.population_table, data["columns"]):
        right = sum(r["predictions"][col["key"]] == r["label"] for r in data["per_image"])
        assert row[1] == f"{right} / 3" == f"{col['correct']} / {col['n']}"
    assert partial[-1].population_table == view.population_table


def test_a_model_outside_the_teaching_world_gets_a_clear_message(model_key, allowed):
    with pytest.raises(gr.Error, match="teaching world"):
        run(model_key, allowed)


def test_a_run_over_the_limit_says_how_many_images_fit(teaching_model, monkeypatch):
    budget.pass_times(teaching_model)
    monkeypatch.setenv(budget.LIMIT_ENV, "0.5")
    with pytest.raises(gr.Error, match=r"fewer images \(about \d+ fit\)"):
        run(n_images=500, steps=20)


def test_bad_numbers_of_images_are_refused(teaching_model):
    for bad in (0, 2.5, "x", 10_000):
        with pytest.raises(gr.Error, match="number of images"):
            run(n_images=bad)


def test_rows_show_the_interval_and_the_published_number():
    rows = many.table_rows([ColumnScore("clean", "Clean", 9, 10, (0.95, 500, "lesson_run")),
                            ColumnScore("attacked", "Attacked", 0, 10)])
    assert rows[0] == ["Clean", "9 / 10", "90%", "60% to 98%", "95% of 500 (lesson_run)"]
    assert rows[1][2:] == ["0%", "0% to 28%", "none"]
