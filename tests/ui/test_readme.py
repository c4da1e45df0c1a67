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
    for block in python_blocks("## Scripting the app")[:3]:
        exec(block.replace("http://127.0.0.1:7860/", url), scope)
    assert [c["column"] for c in scope["result"]["columns"]] == ["clean", "attacked", "training-time", "test-time",
                                                                 "training-free", "stacked"]
    assert [c["key"] for c in scope["pop"]["columns"]] == ["clean", "attacked", "training-time", "training-free",
                                                           "stacked"]
    assert all(c["n"] == 5 for c in scope["pop"]["columns"]) and len(scope["pop"]["per_image"]) == 5


VIT_LOGS = {"teaching ViT": ("training_finetune.json", None), "TeCoA image tower": ("visual_tecoa.json", None),
            "FARE image tower": ("visual_fare.json", None), "PMG-AFT image tower": ("visual_pmg_aft.json", None),
            "APT prompt on the TeCoA tower": ("apt_prompt.json", None),
            "TAPT's adversarially trained prompts": ("tapt_prompts.json", "adv"),
            "FAP's few-shot adversarial prompts": ("fap_prompts.json", None)}


def test_the_readme_quotes_the_vit_training_logs():
    """Each row of the ViT table is the last evaluation its training command logged."""
    import json

    from demo.models.teaching import VIT_DIR

    text = README.read_text(encoding="utf-8").split("### The ViT teaching model", 1)[1].split("## Measuring")[0]
    for name, (log, variant) in VIT_LOGS.items():
        history = json.loads((VIT_DIR / log).read_text())["history"]
        last = [h for h in history if h.get("variant") == variant][-1] if variant else history[-1]
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        quoted = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert quoted == [f"{100 * last[k]:.1f}%" for k in ("seen", "held_out", "pgd10_4")], row
