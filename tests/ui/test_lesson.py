"""The page opens on a lesson that shows: the default example, attacked with the default attack, fools the
undefended model, and each preselected defense gets the label back (measured, not assumed)."""
from __future__ import annotations

import pytest
from PIL import Image

from demo import pipeline
from demo.registry import ATTACKS
from demo.ui import crafted, panels, scenes, share


def test_the_default_comparison_shows_all_three_paradigms_at_work(teaching_model):
    path, labels_text = panels.default_example(teaching=True)
    labels = labels_text.splitlines()
    x = pipeline.to_model_input(teaching_model, Image.open(path))
    defaults = {p: (name, {}) for p, name in panels.DEFAULT_DEFENSES.items()}
    result = pipeline.run_comparison(teaching_model, x, labels, None, panels.DEFAULT_ATTACK, {}, None, defaults)
    clean, attacked, *defended, stacked = result.columns
    # The stack is no preselected defense but their sum, and the page promises nothing for it: the published
    # stacked row is no better than its best part (docs/leaderboard.md), so it is not asked to get this one back.
    assert stacked.key == "stacked" and stacked.defense == "stack"
    assert clean.pred_label == "cyan triangle" and clean.true_prob > 0.9, "the model must know the example well"
    assert not attacked.correct, "the default attack must fool the undefended model"
    for column in defended:
        assert column.correct, f"{column.title} ({column.defense}) does not get the default example back"
    assert {c.defense for c in defended} == {"tecoa", "rtpt", "jpeg"}


def _claims(scene, model):
    """(column, promised correct, actually correct, prediction) for each claim of the scene on `model`."""
    out = []
    for changes, column, correct in scene.claims:
        values = share.apply_query(scene.query(**changes))
        assert {"image", "labels", "attack", "eps", "steps", "mode"} <= set(values), "the scene must set everything"
        x = pipeline.to_model_input(model, Image.open(values["image"]))
        defenses = {p: (values[p.value], {}) for p in pipeline.PARADIGMS if values[p.value] != "none"}
        labels = values["labels"].splitlines()
        assert values["true"] in labels, "an example's class is its true label"
        fields = {f.name for f in ATTACKS.get(values["attack"]).params()}
        params = {k: v for k, v in (("eps", values["eps"] / 255), ("steps", values["steps"])) if k in fields}
        source = crafted.source(values.get("crafted", ""), model, set(scenes.CHECKED))
        result = pipeline.run_comparison(model, x, labels, labels.index(values["true"]), values["attack"],
                                         params, None, defenses, values["mode"] == "adaptive", values["seed"],
                                         crafted_on=source)
        col = result.column(column)
        out.append((f"{column} with {changes or 'its setup'}", correct, col.correct, col.pred_label))
    return out


@pytest.fixture(scope="module")
def vit_model():
    from demo.models.loading import load_model

    return load_model(scenes.VIT, "cpu")


@pytest.mark.parametrize("scene", scenes.SCENES, ids=lambda s: s.title)
def test_each_lesson_scene_shows_what_it_says(scene, teaching_model):
    for what, promised, got, pred in _claims(scene, teaching_model):
        assert got == promised, f"{scene.title!r} promises {what} {'right' if promised else 'wrong'}; it says {pred}"


@pytest.mark.parametrize("scene", scenes.SCENES, ids=lambda s: s.title)
def test_each_scene_says_truly_whether_it_shows_on_the_vit(scene, vit_model):
    """On the ViT teaching model a scene either shows the same (and the page says so) or gives the reason."""
    claims = _claims(scene, vit_model)
    holds = all(got == promised for _, promised, got, _ in claims)
    assert holds == (scenes.VIT in scene.holds_on), f"{scene.title!r} on the ViT: {claims}"
    note = scenes.model_note(scene, scenes.VIT)
    if holds:
        assert note == scenes.SAME_ON_VIT
    else:
        assert scene.vit and "does not show" in note and "n/a" not in note and "{{" not in note, note


@pytest.mark.parametrize("scene", scenes.SCENES, ids=lambda s: s.title)
def test_each_scene_quotes_its_population_number(scene):
    """The one-image lesson comes with the measured number on many images, read from docs/results."""
    assert scene.population, "a scene without its population number teaches from one image only"
    text = scenes.fill(scene.population)
    assert "n/a" not in text and "{{" not in text, f"{scene.title!r} quotes a number docs/results does not hold: {text}"
    assert text.count("%") >= 2


def test_scene_notes_by_model():
    scene = scenes.SCENES[1]  # holds on the ResNet only
    assert scenes.model_note(scene, scenes.MEASURED_ON) == ""
    assert scenes.model_note(scene, "vit-b-32") == scenes.OTHER_MODEL_NOTE
    fake = {"tecoa": {"seen": {"n": 7, "clean": 0.5, "adaptive": 0.25}}, "none": {"seen": {"worst": 0.0}}}
    note = scenes.model_note(scene, scenes.VIT, fake)
    assert "On 7 seen" in note and "50.0%" in note and "25.0%" in note


def test_the_jpeg_scene_reason_on_the_vit_is_measured():
    """'the ViT's perturbations survive compression': JPEG against the oblivious attack keeps far fewer
    images right on the ViT than on the ResNet."""
    from demo.eval.publish import published
    from demo.eval.publish.published import model_results

    results = published.load()
    resnet = published.defense_numbers(model_results(results, "teaching"))["jpeg"]["seen"]["oblivious"]
    vit = published.defense_numbers(model_results(results, scenes.VIT))["jpeg"]["seen"]["oblivious"]
    assert vit < resnet / 2, (vit, resnet)


def test_the_readme_counts_the_scenes_that_show_on_the_vit():
    from pathlib import Path

    words = ["none", "one", "two", "three", "four", "five"]
    same = sum(scenes.VIT in s.holds_on for s in scenes.SCENES)
    readme = " ".join(Path(__file__).resolve().parents[2].joinpath("README.md").read_text().split())
    assert (f"on the ViT, {words[same]} show the same and {words[len(scenes.SCENES) - same]} say why they do not"
            in readme)


# --- what each scene's words claim, against the numbers of the model it was measured on ----------------

def _measured() -> dict:
    from demo.eval.publish import published

    return published.defense_numbers(published.model_results(published.load(), scenes.MEASURED_ON))


def _scene(defense: str) -> scenes.Scene:
    return next(s for s in scenes.SCENES if defense in s.setup.values())


def test_scenes_refer_to_each_other_by_name():
    """A reference by position ("the scene before last") breaks when scenes move; a name cannot point wrong."""
    import re

    titles = {s.title for s in scenes.SCENES}
    texts = [t for s in scenes.SCENES for t in (s.notice, s.population, s.vit)]
    for text in texts:
        assert not re.search(r"scene (before|after|above|below)|(previous|next|last|first|other) scene", text), text
    named = [name for text in texts for name in re.findall(r'scene "([^"]+)"', text)]
    assert named, "the budget scene builds on the TeCoA scene and must name it"
    assert set(named) <= titles, f"scenes named that do not exist: {set(named) - titles}"


def test_the_robust_weights_scene_claims_what_its_numbers_show():
    """"Resist": TeCoA keeps more images than the undefended model beyond noise, under the attack aimed at it
    and under AutoAttack; "most images still fall": AutoAttack leaves it under half."""
    from demo.eval.metrics import significantly_above

    n = _measured()
    tecoa, none = n["tecoa"], n["none"]
    assert "resist" in _scene("tecoa").title and "most images still fall" in _scene("tecoa").population
    assert significantly_above(tecoa["seen"]["adaptive"], none["seen"]["worst"], tecoa["seen"]["n"])
    assert significantly_above(tecoa["aa4"]["worst"], none["aa4"]["worst"], tecoa["aa4"]["n"])
    assert tecoa["aa4"]["worst"] < 0.5


def test_no_scene_calls_a_defense_weaker_than_the_numbers_show():
    """A scene may call its defense weak (or say it breaks) only if that defense's AutoAttack worst case is
    below, beyond noise, that of every training-time defense another scene shows holding."""
    from demo.eval.metrics import significantly_above

    n = _measured()
    robust = [v for s in scenes.SCENES for k, v in s.setup.items() if k == "training-time"]
    assert robust, "some scene shows a robust model"
    jpeg = _scene("jpeg")
    assert "flatters" in jpeg.title  # the JPEG scene teaches oblivious vs adaptive, not a ranking
    for scene in scenes.SCENES:
        if any(w in scene.title.lower() for w in ("weak", "break")):
            defense = scene.setup.get("training-free") or scene.setup.get("test-time")
            for r in robust:
                assert significantly_above(n[r]["aa4"]["worst"], n[defense]["aa4"]["worst"], n[r]["aa4"]["n"]), (
                    f"{scene.title!r} calls {defense} weak, yet it keeps {n[defense]['aa4']['worst']:.3f} under "
                    f"AutoAttack against {r}'s {n[r]['aa4']['worst']:.3f}")


def test_the_jpeg_scene_claim_that_an_oblivious_attack_flatters_it_is_measured():
    from demo.eval.metrics import significantly_above

    jpeg = _measured()["jpeg"]["seen"]
    assert significantly_above(jpeg["oblivious"], jpeg["worst"], jpeg["n"]), jpeg
    # "BPDA is the weakest stand-in: through a differentiable JPEG, PGD-10 leaves less"
    population = _scene("jpeg").population
    assert "BPDA" in population and "differentiable" in population
    assert significantly_above(jpeg["adaptive"], jpeg["diff"], jpeg["n"]), jpeg


def test_the_rtpt_scene_credits_its_vote_not_its_tuning():
    """R-TPT's robustness is its reliability-weighted vote over random crops (a randomized ensemble); the
    scene says so as the mechanism, with Croce et al. (2022), and never credits the adaptation."""
    scene = _scene("rtpt")
    text = f"{scene.title} {scene.notice}"
    assert "vote" in scene.title and "Croce et al., 2022" in scene.notice
    assert not any(w in text.lower() for w in ("adaptation helps", "tuning helps", "thanks to its tuning"))
    assert "upper bounds" in scene.population


def test_the_noise_scene_claims_what_its_numbers_show():
    """Noise at 4/255 leaves the model about as right as clean; PGD at the same budget does not."""
    from demo.eval.publish import lessons
    from demo.eval.metrics import significantly_above

    n = lessons.run_numbers()
    for noise in ("lesson_noise_corners_4", "lesson_noise_gaussian_4"):
        assert not significantly_above(n[noise]["clean"], n[noise]["robust"], n[noise]["n"]), n[noise]
        assert significantly_above(n[noise]["robust"], n["lesson_pgd_4"]["robust"], n["lesson_pgd_4"]["n"])
    assert "Goodfellow et al., 2015" in scenes.NOISE.notice


def test_the_transfer_scene_claims_what_its_numbers_show():
    """"Rarely transfers" at 4/255: each tower stays right on far more transferred images than on images
    crafted on itself, and on most of them."""
    from demo.eval.publish import lessons
    from demo.eval.metrics import significantly_above

    n = lessons.run_numbers()
    for transfer, own in (("transfer_vit_to_resnet", "lesson_pgd_4"), ("transfer_resnet_to_vit", "vit_lesson_pgd_4")):
        assert significantly_above(n[transfer]["robust"], n[own]["robust"], n[transfer]["n"]), (n[transfer], n[own])
        assert n[transfer]["robust"] > 0.5
    assert "rarely transfers" in scenes.TRANSFER.notice and scenes.TRANSFER.setup["crafted"] == scenes.VIT
