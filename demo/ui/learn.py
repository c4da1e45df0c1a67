"""The Learn tab: what each paradigm does, what it costs, where it breaks, and a guided walk-through."""
from __future__ import annotations

import gradio as gr

from ..eval.publish import lessons, published
from . import assets

# Learn-tab pages that end with the published numbers of their paradigm.
MEASURED = {"training_time": "training-time", "test_time": "test-time", "training_free": "training-free"}
PAGES = [("How attacks work", "attacks"), ("Noise is not an attack", "noise"), ("Attacks transfer", "transfer"),
         ("Training-time defenses", "training_time"), ("Test-time adaptation", "test_time"),
         ("Training-free defenses", "training_free"), ("All three paradigms stacked", "stacking"),
         ("Oblivious vs adaptive attacks", "adaptive"), ("Reading the numbers", "numbers"),
         ("One image or many", "population"), ("References", "references")]


def page_text(name: str, numbers: dict | None = None) -> str:
    """A Learn page with its numbers filled from docs/results: defense tokens, then the lesson runs'."""
    text = lessons.fill(published.fill(assets.content(name), numbers))
    if name in MEASURED:
        text += "\n\n" + published.paradigm_table(MEASURED[name], numbers)
    return text


def build() -> None:
    gr.Markdown(assets.content("learn_intro"))
    steps = assets.sections("walkthrough")
    if steps:
        with gr.Accordion("Guided walk-through for a class", open=True):
            with gr.Walkthrough(selected=0, elem_id="walkthrough") as walk:
                for i, (title, body) in enumerate(steps):
                    with gr.Step(f"{i + 1}. {title}", id=i):
                        gr.Markdown(body)
                        with gr.Row():
                            if i > 0:
                                back = gr.Button("Back", size="sm")
                                back.click(lambda i=i: gr.Walkthrough(selected=i - 1), None, walk,
                                           api_visibility="private", queue=False)
                            if i < len(steps) - 1:
                                nxt = gr.Button("Next", size="sm", variant="primary")
                                nxt.click(lambda i=i: gr.Walkthrough(selected=i + 1), None, walk,
                                          api_visibility="private", queue=False)
    numbers = published.defense_numbers()
    for title, name in PAGES:
        text = page_text(name, numbers)
        if text.strip():
            with gr.Accordion(title, open=False):
                gr.Markdown(text)
    board = published.RESULTS_DIR.parent / "leaderboard.md"
    if board.is_file():
        with gr.Accordion("Leaderboard: all three paradigms under one attack standard", open=False):
            gr.Markdown(board.read_text(encoding="utf-8").split("\n", 1)[1])
