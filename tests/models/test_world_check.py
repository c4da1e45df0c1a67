"""The out-of-world check of the teaching model: rare false alarms on world images, photos and noise caught."""
from __future__ import annotations

import torch

from demo import pipeline
from demo.eval.run import load_world
from demo.models import world_check as W
from demo.world.outside import outside_images, portrait


def test_shipped_check_separates_world_from_photos(teaching_model):
    check = W.check_for(teaching_model)
    assert check is not None, "the teaching model ships its fitted world check (python -m demo.eval.check_world fit)"
    seen, _ = load_world(100, teaching_model.image_size, "seen")
    held, _ = load_world(100, teaching_model.image_size, "held_out")
    false_alarms = float(torch.cat([check.outside(teaching_model, seen), check.outside(teaching_model, held)]).float().mean())
    assert false_alarms <= 0.02, f"{false_alarms:.1%} of world images flagged"
    images = outside_images(teaching_model.image_size, per_kind=6)
    caught = {k: float(check.outside(teaching_model, torch.cat([pipeline.to_model_input(teaching_model, im)
                                                                 for im in images[k]])).float().mean())
              for k in ("photo", "noise", "gradients")}
    assert caught["photo"] >= 0.8 and caught["noise"] >= 0.8 and caught["gradients"] >= 0.5, caught


def test_verdict_on_a_portrait_and_on_an_example(teaching_model):
    photo = W.verdict(teaching_model, pipeline.to_model_input(teaching_model, portrait()))
    assert photo.outside and photo.score > photo.threshold and photo.sentence.startswith("This image is not")
    x, _ = load_world(1, teaching_model.image_size, "seen")
    world = W.verdict(teaching_model, x)
    assert not world.outside and world.sentence == ""


def test_models_that_know_photos_get_no_check(tiny_dir):
    from demo.models.loading import load_model

    assert W.check_for(load_model(f"local-dir:{tiny_dir}", "cpu")) is None


def test_refit_reproduces_the_shipped_threshold_scale(teaching_model):
    """A small refit (fewer images) lands near the shipped threshold: the asset is what the code fits."""
    small = W.fit(teaching_model, n_fit=400, n_calibration=200)
    shipped = W.check_for(teaching_model)
    assert len(small.means) == len(shipped.means)
    assert abs(small.threshold - shipped.threshold) < 1.5, (small.threshold, shipped.threshold)


def test_the_readme_quotes_the_measured_rates():
    """The README's false-alarm and detection numbers are those of docs/results/world_check.json."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    measured = json.loads((root / "docs" / "results" / "world_check.json").read_text())
    text = " ".join((root / "README.md").read_text().split())
    m = re.search(r"false alarms on ([\d.]+)% of (\d+) seen and ([\d.]+)% of (\d+) held-out world images; it catches "
                  r"(\d+) of (\d+) photographs, all (\d+) noise images and (\d+) of (\d+) colour gradients, but only "
                  r"(\d+) of (\d+) line drawings", text)
    assert m, "the README no longer quotes the world check's measured rates"
    fa, det = measured["false_alarm"], measured["detected"]
    assert float(m[1]) == round(100 * fa["seen"]["rate"], 1) and int(m[2]) == fa["seen"]["n"]
    assert float(m[3]) == round(100 * fa["held_out"]["rate"], 1) and int(m[4]) == fa["held_out"]["n"]
    for (hit, n), kind in zip(((m[5], m[6]), (m[7], m[7]), (m[8], m[9]), (m[10], m[11])),
                              ("photo", "noise", "gradients", "drawings")):
        assert int(n) == det[kind]["n"] and int(hit) == round(det[kind]["rate"] * det[kind]["n"]), kind


def test_the_vit_teaching_model_is_judged_by_the_worlds_reference_check():
    """Both teaching models know the same world, so an image is judged the same way for either."""
    from demo import world
    from demo.models.loading import load_model
    from demo.world.outside import outside_images

    vit, resnet = load_model("teaching-vit", "cpu"), load_model("teaching", "cpu")
    assert W.reference_model(vit) is resnet
    photos = outside_images(128)["photo"][:2]
    from demo.pipeline import to_model_input

    x = torch.cat([to_model_input(vit, im) for im in photos] + [world.make_batch(2, 3, 128, "seen")[0]])
    for i in range(len(x)):
        a, b = W.verdict(vit, x[i:i + 1]), W.verdict(resnet, x[i:i + 1])
        assert (a.outside, a.score) == (b.outside, b.score)
    assert [W.verdict(vit, x[i:i + 1]).outside for i in range(len(x))] == [True, True, False, False]
