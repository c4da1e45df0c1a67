"""The Learn tab's lessons say only what the published numbers show: each claim in words is checked here
against the numbers it is built on (docs/results), filled by `demo.eval.published.fill`."""
from __future__ import annotations

import pytest

from demo.eval.publish import published
from demo.eval.metrics import significantly_above
from demo.ui import assets


@pytest.fixture(scope="module")
def numbers():
    return published.defense_numbers(published.model_results(published.load(), "teaching"))


def _filled(name: str, numbers: dict) -> str:
    from demo.eval.publish import lessons

    text = lessons.fill(published.fill(assets.content(name), numbers))
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


def _sentences(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.)])\s+(?=[A-Z])", " ".join(text.split())) if s]


@pytest.mark.parametrize("model", ["teaching", "teaching-vit"])
def test_the_tecoa_and_fare_notes_tell_mao_et_al_from_the_4_255_retraining(model):
    """Mao et al. (TeCoA) train at 1/255 with 2-step PGD; the 4/255 recipe with 10-step PGD is RobustVLM's
    (Schlarmann et al.), which retrained TeCoA. Every text that names Mao et al. keeps their budget apart from
    RobustVLM's, and says which one the shipped towers follow: the budget in their training logs."""
    import json

    from demo.defenses.training_time.fare import FARE
    from demo.defenses.training_time.tecoa import TeCoA
    from demo.models import teaching

    for twin, note in (("tecoa", TeCoA.deviation), ("fare", FARE.deviation)):
        eps = json.loads((teaching.MODELS[model].folder / f"visual_{twin}.json").read_text())["eps"] * 255
        assert round(eps) == 4, "the notes say the towers follow the 4/255 recipe; retrained at another budget?"
        assert "RobustVLM" in note and "shortened" in note
        for sentence in _sentences(note):
            if "RobustVLM" in sentence:
                assert "4/255" in sentence and "10-step" in sentence and "Mao" not in sentence, sentence
    from demo.eval.publish import prose

    texts = [TeCoA.deviation, assets.content("training_time"), prose.INTRO]
    for text in texts:
        mao = [s for s in _sentences(text) if "Mao et al." in s]
        assert mao, "the TeCoA texts name Mao et al."
        for sentence in mao:
            assert "4/255" not in sentence and "10-step" not in sentence, f"credits Mao et al. with RobustVLM's recipe: {sentence}"
        assert any("1/255" in s and "2-step" in s for s in mao), "Mao et al.'s own budget is stated"
        assert any("RobustVLM" in s and "4/255" in s for s in _sentences(text))


def test_the_clipure_lesson_explains_rows_that_equal_the_undefended_ones(numbers):
    """The Learn tab says CLIPure's rows equal the undefended rows because its default purification is the
    identity: checked on the published numbers of both teaching models (same clean accuracy on every run,
    worst cases within one image) ..."""
    vit = published.defense_numbers(published.model_results(published.load(), "teaching-vit"))
    for nums in (numbers, vit):
        runs = [k for k, d in nums["clipure"].items() if isinstance(d, dict) and "clean" in d]
        assert {"seen", "aa4"} <= set(runs)
        for k in runs:
            c, u = nums["clipure"][k], nums["none"][k]
            assert c["clean"] == pytest.approx(u["clean"], abs=1e-9), k
            assert abs(c["worst"] - u["worst"]) * c["n"] <= 1 + 1e-6, k
    text = _filled("training_free", numbers)
    assert "rows in the results equal the undefended ones" in " ".join(text.split())


def test_clipure_at_its_official_settings_is_the_identity_on_teaching_world_images(teaching_model, world_batch):
    """... and on the teaching world itself: every image embedding lies closer to the empty prompt than one
    step's turn (atan 30, 88 degrees), so ten steps bring it back to where it started."""
    import math

    import torch

    from demo import world
    from demo.defenses.training_free.clipure import null_text_embedding
    from demo.registry import DEFENSES

    clf = teaching_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    images, _ = world_batch
    defense = DEFENSES.create("clipure")
    assert (defense.steps, defense.eta) == (10, 30.0), "the lesson describes the official settings"
    with torch.no_grad():
        feats = torch.nn.functional.normalize(clf.encode(images), dim=-1)
        angle = torch.rad2deg(torch.acos((feats @ null_text_embedding(clf)).clamp(-1, 1)))
        assert angle.max() < math.degrees(math.atan(defense.eta))
        out = defense(clf, images)
        assert torch.allclose(out.features, feats, atol=1e-5)
        assert torch.equal(out.logits.argmax(1), clf(images).argmax(1))


def test_the_anti_adversary_note_says_what_its_step_size_and_its_numbers_show(teaching_model, world_batch, numbers):
    """Its note: a step of 4/255 costs clean accuracy that 1/255 does not; its adaptive attack keeps more
    images than the oblivious one, so it is judged by its worst case."""
    import torch

    from demo import world
    from demo.defenses.training_free.anti_adversary import AntiAdversary
    from demo.registry import DEFENSES

    note = AntiAdversary.deviation
    assert "a step of 4/255 already costs clean accuracy that 1/255 does not" in note and "worst case" in note
    clf = teaching_model.classifier(world.CLASSNAMES, [world.EVAL_TEMPLATE])
    images, labels = world_batch
    with torch.no_grad():
        plain = int((clf(images).argmax(1) == labels).sum())
    right = {a: int((DEFENSES.create("anti_adversary", alpha=a / 255)(clf, images, seed=0).logits.argmax(1) == labels)
                    .sum()) for a in (1, 4)}
    assert right[1] >= plain - 1 and right[4] <= plain - 3, (plain, right)
    anti = numbers["anti_adversary"]["seen"]
    assert significantly_above(anti["adaptive"], anti["oblivious"], anti["n"])


def test_the_survey_is_cited_where_the_three_families_are_introduced():
    """The app teaches the three-family taxonomy of Fu & Zhang's survey: every place that introduces the
    families cites it, not only the references page."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    intro = readme.split("\n# ", 1)[1].split("\n## ", 1)[0]  # from the title to the first section
    for where, text in (("learn_intro.md", assets.content("learn_intro")), ("header.md", assets.content("header")),
                        ("the README's introduction", intro)):
        text = " ".join(text.split())
        assert "three" in text and ("families" in text or "paradigms" in text), f"{where} introduces the families"
        assert "Fu & Zhang" in text and "2601.12443" in text, f"{where} does not cite the survey"
    assert "2601.12443" in assets.content("references")


def test_the_test_time_page_credits_r_tpt_s_vote_as_far_as_the_numbers_go(numbers):
    """R-TPT's robustness is its crop vote, stated as the mechanism (with Croce et al., 2022) and backed by
    what is published: TPT, which tunes the same prompt but answers from the whole image, keeps no more than
    the undefended model against the oblivious attack, and R-TPT keeps far more."""
    raw = " ".join(assets.content("test_time").split())
    assert "The mechanism is its readout, not its tuning" in raw and "Croce et al., 2022" in raw
    assert "Croce" in assets.content("references") and "2202.13711" in assets.content("references")
    tpt, rtpt, none = (numbers[k]["seen"] for k in ("tpt", "rtpt", "none"))
    assert not significantly_above(tpt["oblivious"], none["oblivious"], tpt["n"])  # "as the undefended model does"
    assert significantly_above(rtpt["oblivious"], tpt["oblivious"], rtpt["n"])
    # "the vote gives what R-TPT gives, the tuned prompt what the plain model gives": on held-out classes,
    # where the two halves part, the vote and the full method agree and the tuned prompt does not
    from demo.eval.metrics import mcnemar_exact

    results = published.load()
    right = {part: [r == results[f"rand_rtpt_clean_{part}_held_out"]["score_draws"]
                    for r in results[f"rand_rtpt_clean_{part}_held_out"]["clean_right"]]
             for part in ("tuned", "vote", "full")}
    assert mcnemar_exact(right["vote"], right["full"])[2] >= 0.05
    assert mcnemar_exact(right["tuned"], right["full"])[2] < 0.05
    # and under the protocol's attack (one EOT draw, the same 30 seen images)
    attacked = {part: [r == results[name]["score_draws"] for r in results[name]["adaptive_right"]]
                for part, name in (("tuned", "rand_rtpt_tuned_eot1_seen"), ("vote", "rand_rtpt_vote_eot1_seen"),
                                   ("full", "rand_rtpt_eot1_seen"))}
    assert mcnemar_exact(attacked["vote"], attacked["full"])[2] >= 0.05
    assert mcnemar_exact(attacked["tuned"], attacked["full"])[2] < 0.05
    _filled("test_time", numbers)


@pytest.mark.parametrize("name", ["noise", "transfer", "stacking", "population"])
def test_the_lesson_pages_are_in_the_learn_tab_with_their_numbers(name):
    """The four lesson pages are listed in the Learn tab, and every number they quote is filled from
    docs/results (an unpublished run would read "n/a", a token left unfilled "{{")."""
    from demo.ui import learn

    assert name in [page for _, page in learn.PAGES]
    text = learn.page_text(name)
    assert "{{" not in text and "n/a" not in text, text
    if name != "population":  # the population page explains the view; the others quote measured runs
        assert "%" in text


def test_tapt_in_its_paper_s_threat_model_adds_nothing_measurable():
    """"The adaptation adds nothing measurable": on the same images, the attack made on TAPT's starting prompts
    leaves as many right after TAPT adapts (on every scoring draw) as on the starting prompts alone (McNemar)."""
    from demo.eval.metrics import mcnemar_exact

    results = published.load()
    start, handed = results["rand_tapt_start_seen"], results["rand_tapt_from_start_seen"]
    n = len(handed["labels"])
    assert start["labels"][:n] == handed["labels"]
    alone = [r == start["score_draws"] for r in start["adaptive_right"][:n]]
    adapted = [r == handed["score_draws"] for r in handed["transfer_right"]]
    assert mcnemar_exact(adapted, alone)[2] >= 0.05
    assert "adds nothing measurable" in " ".join(assets.content("test_time").split())


def test_r_tpt_under_the_strong_attack_is_said_as_the_numbers_show(numbers):
    """"A stronger attack lowers it no further that can be measured": on the same images EOT-APGD leaves no
    significantly fewer right on every draw than the PGD sweep's lowest count (McNemar); "too few yet for
    McNemar's test to tell R-TPT from the undefended model": R-TPT's per-image worst case over every attack
    and the undefended model's, on the same images, are not separated. More images could change both; then
    this test fails and the words must change."""
    from demo.eval.metrics import mcnemar_exact
    from demo.ui import scenes

    results = published.load()
    strong = results["rand_rtpt_apgd_eot1_seen"]
    sweep = min((results[f"rand_rtpt_eot{k}_seen"] for k in (1, 2, 4)), key=lambda r: sum(
        x == r["score_draws"] for x in r["adaptive_right"]))
    n = len(strong["labels"])
    assert sweep["labels"][:n] == strong["labels"]
    right = [[x == r["score_draws"] for x in r["adaptive_right"][:n]] for r in (sweep, strong)]
    assert mcnemar_exact(*right)[2] >= 0.05
    rtpt_labels, rtpt_ok = numbers["rtpt"]["leaderboard_survivors"]
    none_labels, none_ok = numbers["none"]["leaderboard_survivors"]
    k = len(rtpt_labels)
    assert none_labels[:k] == rtpt_labels
    assert sum(rtpt_ok) > sum(none_ok[:k])  # "a few images the vote holds against every attack run"
    assert mcnemar_exact(rtpt_ok, none_ok[:k])[2] >= 0.05  # "too few yet ... to tell R-TPT from the undefended"
    raw = " ".join(assets.content("test_time").split())
    assert "a stronger attack lowers it no further that can be measured" in raw and "too few yet" in raw
    scene = next(s for s in scenes.SCENES if "rtpt" in s.setup.values())
    assert "cannot yet tell the two apart" in scene.population
    _filled("test_time", numbers)
    _filled("adaptive", numbers)
