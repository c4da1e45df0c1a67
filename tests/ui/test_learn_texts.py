"""The Learn tab's lessons say only what the published numbers show: each claim in words is checked here
against the numbers it is built on (docs/results), filled by `demo.eval.published.fill`."""
from __future__ import annotations

import pytest

from demo.eval import published
from demo.eval.metrics import significantly_above
from demo.ui import assets


@pytest.fixture(scope="module")
def numbers():
    return published.defense_numbers(published.model_results(published.load(), "teaching"))


def _filled(name: str, numbers: dict) -> str:
    text = published.fill(assets.content(name), numbers)
    assert "n/a" not in text and "{{" not in text, f"{name}.md quotes a number docs/results does not hold"
    return text


def test_the_adaptive_page_judges_a_defense_by_its_worst_case_with_anti_adversary_as_the_example(numbers):
    """The rule is the worst case over every attack, and its worked example shows why one adaptive attack
    is not enough: Anti-adversary's adaptive number is above its oblivious one and far above its worst case."""
    raw = " ".join(assets.content("adaptive").split())
    assert "only as good as its result under the adaptive attack" not in raw
    assert "worst case over every attack" in raw and "Anti-adversary is the worked example" in raw
    for token in ("anti_adversary.seen.adaptive", "anti_adversary.seen.worst", "anti_adversary.aa4.worst"):
        assert "{{" + token + "}}" in raw
    anti = numbers["anti_adversary"]["seen"]
    assert significantly_above(anti["adaptive"], anti["oblivious"], anti["n"])  # "more than against the oblivious"
    assert significantly_above(anti["adaptive"], anti["worst"], anti["n"])
    assert numbers["anti_adversary"]["aa4"]["worst"] <= anti["worst"]
    _filled("adaptive", numbers)
