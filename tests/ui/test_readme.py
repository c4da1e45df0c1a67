"""The README's code runs as written (a snippet that stops working is a broken promise to its readers)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(after: str) -> list[str]:
    text = README.read_text(encoding="utf-8").split(after, 1)[1]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_library_snippet_runs(monkeypatch):
    monkeypatch.chdir(README.parent)
    scope: dict = {}
    exec(python_blocks("## Library")[0], scope)
    assert scope["out"].logits.shape == (1, 3) and scope["adv"].adv_images.shape == scope["x"].shape


def test_client_snippets_run_against_the_app(launch, monkeypatch):
    monkeypatch.chdir(README.parent)
    url = launch("teaching")
    scope: dict = {}
    for block in python_blocks("## Scripting the app")[:2]:
        exec(block.replace("http://127.0.0.1:7860/", url), scope)
    assert [c["column"] for c in scope["result"]["columns"]][:2] == ["clean", "attacked"]
