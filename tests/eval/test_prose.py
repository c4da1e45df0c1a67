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


def _clipure_numbers(clean_gap: float = 0.0, robust_gap: float = 0.0) -> dict:
    none = _row("None (undefended)", "none", 0.076, 0.0)
    clipure = _row("CLIPure-Cos (latent purification)", "training-free", 0.076 + robust_gap, 0.0)
    clipure["seen"]["clean"] += clean_gap
    return {"none": none, "clipure": clipure}


def _free(numbers: dict) -> str:
    return next(p for p in prose.what_this_shows(numbers).split("\n\n") if p.startswith("**Training-free"))


def test_clipure_rows_equal_to_the_undefended_rows_are_explained_and_only_then():
    text = _free(_clipure_numbers())
    assert "CLIPure-Cos's rows equal the undefended rows (2 runs: the same clean accuracy, identical robust" in text
    assert "its purification is the identity" in text and "88 degrees" in text and ".  " not in text
    text = _free(_clipure_numbers(robust_gap=1 / 500))
    assert "robust accuracies at most 1 image apart" in text
    for numbers in (_clipure_numbers(clean_gap=0.01), _clipure_numbers(robust_gap=0.05)):
        assert "purification is the identity" not in _free(numbers), "said while the rows differ"
