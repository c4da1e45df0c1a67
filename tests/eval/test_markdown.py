"""The one markdown table renderer, and that the results, the sweep and the benchmark draw tables with it."""
from __future__ import annotations

from pathlib import Path

from demo.eval.publish import markdown as md

PACKAGE = Path(__file__).resolve().parents[2] / "demo"


def test_a_table_has_a_header_a_rule_per_alignment_and_one_line_per_row():
    lines = md.table(["name", "n", "ok"], [["jpeg", 12, "pass"], ["tpt", "", ""]], align="lrc")
    assert lines == ["| name | n | ok |", "|---|---:|:---:|", "| jpeg | 12 | pass |", "| tpt | | |"]
    assert md.text(["a", "b"], []) == "| a | b |\n|---|---|\n"


def test_no_module_draws_a_table_rule_of_its_own():
    """Every markdown table in the package goes through the renderer (a rule written by hand fails here)."""
    drawn = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if p.name != "markdown.py" and "|---" in p.read_text(encoding="utf-8")]
    assert not drawn, f"tables drawn outside demo/eval/publish/markdown.py: {drawn}"
    users = {f"{p.parent.name}/{p.name}" for p in PACKAGE.rglob("*.py")
             if any(s in p.read_text(encoding="utf-8") for s in ("markdown as md", "markdown import table"))}
    assert {"publish/tables.py", "sweep/merge.py", "bench/writeup.py"} <= users, users
