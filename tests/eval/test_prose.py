"""The report's sentences follow the numbers they are built from."""
from __future__ import annotations

from demo.eval.publish import prose


def _row(title: str, paradigm: str, worst: float, aa: float | None = None) -> dict:
    seen = {"clean": 0.9, "oblivious": 0.5, "adaptive": worst, "worst": worst, "n": 500}
    d = {"title": title, "paradigm": paradigm, "seen": seen}
    if aa is not None:
        d["aa4"] = {"clean": 0.9, "oblivious": 0.5, "adaptive": aa, "worst": aa, "n": 200}
    return d


def test_the_test_time_paragraph_quotes_autoattack_where_it_ran_and_flags_the_rest():
    numbers = {"none": _row("None (undefended)", "none", 0.07, 0.0),
               "tpt": _row("TPT (test-time prompt tuning)", "test-time", 0.076, 0.005),
               "rtpt": _row("R-TPT (robust test-time prompt tuning)", "test-time", 0.37)}
    text = next(p for p in prose.what_this_shows(numbers).split("\n\n") if p.startswith("**Test-time"))
    assert "leaves TPT 0.5% [" in text and "against 7.6% under PGD-10" in text
    assert "R-TPT was attacked with PGD-10 only (not AutoAttack), so its numbers are upper bounds." in text
    numbers["rtpt"]["aa4"] = {**numbers["tpt"]["aa4"], "worst": 0.23}
    text = next(p for p in prose.what_this_shows(numbers).split("\n\n") if p.startswith("**Test-time"))
    assert "PGD-10 only" not in text and "R-TPT 23.0% [" in text and "against 7.6%, 37.0% under PGD-10" in text
