"""Result panels own their outputs by name: a view's fields are the page's components of the same name."""
import gradio as gr

from demo import pipeline
from demo.ui import handlers, panels, views


def test_the_result_columns_are_the_pipelines():
    assert tuple(c.key for c in views.RESULT_COLUMNS) == pipeline.COLUMN_KEYS
    assert [c.key for c in views.DEFENSE_COLUMNS] == [p.value for p in pipeline.PARADIGMS] + ["stacked"]


def test_views_find_their_outputs_by_name():
    with gr.Blocks():
        page = panels.Page()
        panels.build_results(page)
    columns = [page.columns[c.field] for c in views.RESULT_COLUMNS]
    compare = page.outputs(handlers.CompareView)
    assert compare == [o for c in columns for o in c.outputs] + [
        page.heatmap, page.changes, page.timing_chart, page.timing_table, page.adversarial_file, page.results_file,
        page.summary, page.strip]
    assert page.outputs(handlers.DefendView)[:3] == page.columns["training_time"].outputs
    assert page.outputs(handlers.AttackView)[-3:] == [page.heatmap, page.adversarial_file, page.summary]
    # a partial view (a streamed column) is built by name; the columns not yet computed say so
    pending = handlers.CompareView(**{c.field: views.pending_view() for c in views.RESULT_COLUMNS}, summary="s")
    assert len(handlers.flat(pending)) == len(compare) and pending.strip is None
