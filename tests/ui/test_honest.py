"""The page tells the truth about any image: a photo on the teaching model is not judged, an example's
class is its true label, and shared links carry a known class."""
from __future__ import annotations

import pytest

from demo.ui import assets, handlers, model_status, share
from demo.world.outside import portrait

TEACHING = "teaching"
ALLOWED = {TEACHING}
WORLD_LABELS = "red star\ncyan triangle\norange ring\nblue heart"


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "portrait.png"
    portrait().save(path)
    return str(path)


def _example(name: str) -> str:
    return next(p for k in ("teaching", "photo") for p, _, _ in assets.examples(k) if p.endswith(f"{name}.png"))


def test_a_photo_on_the_teaching_model_is_not_judged(photo_file):
    view = handlers.classify(photo_file, WORLD_LABELS, handlers.AUTO_TRUE, TEACHING, allowed=ALLOWED)
    assert "not judged" in view.verdict and "correct" not in view.verdict
    note, _, warning = model_status.seen_by_model(photo_file, TEACHING, allowed=ALLOWED)
    assert "not from the teaching world" in warning and "Model selector" in warning
    data = handlers.compare_json(photo_file, WORLD_LABELS, handlers.AUTO_TRUE, TEACHING, "fgsm", 4, 1,
                                 handlers.NO_TARGET, "oblivious", 0, "none", "none", "jpeg", allowed=ALLOWED)
    assert data["outside_world"] is True and data["outside_world_note"].startswith("This image is not")
    assert all(c["correct"] is None for c in data["columns"])
    view = handlers.compare(photo_file, WORLD_LABELS, handlers.AUTO_TRUE, TEACHING, "fgsm", 4, 1,
                            handlers.NO_TARGET, "oblivious", 0, "none", "none", "jpeg", allowed=ALLOWED)
    verdicts = [view[i].verdict for i in range(6)]
    assert all("not judged" in v and "correct" not in v for v in verdicts)
    assert view.summary.startswith("**&#9888; This image is not") and view.strip.count("not judged") == 6


def test_a_world_image_is_judged(photo_file):
    path = _example("teaching_red_star")
    view = handlers.classify(path, WORLD_LABELS, "red star", TEACHING, allowed=ALLOWED)
    assert "correct" in view.verdict and "assumed" not in view.verdict
    assert model_status.seen_by_model(path, TEACHING, allowed=ALLOWED)[2] == ""
    data = handlers.compare_json(path, WORLD_LABELS, "red star", TEACHING, "fgsm", 4, 1, handlers.NO_TARGET,
                                 "oblivious", 0, "none", "none", "none", allowed=ALLOWED)
    assert data["outside_world"] is False and data["columns"][0]["correct"] is True
    assert data["true_label_assumed"] is False


@pytest.mark.parametrize("name,cls", [("teaching_red_star", "red star"), ("teaching_orange_heart_held-out", "orange heart"),
                                      ("photo_apple", "apple"), ("photo_night_sky", "night sky")])
def test_every_example_names_its_class(name, cls):
    path = _example(name)
    assert assets.example_class(path) == cls
    labels = next(lab for k in ("teaching", "photo") for p, _, lab in assets.examples(k) if p == path)
    assert cls in handlers.parse_labels(labels), "an example's class must be among its labels"


def test_an_upload_has_no_known_class(photo_file):
    assert assets.example_class(photo_file) is None and assets.example_class(None) is None


def test_links_carry_the_known_class():
    values = share.apply_query({"example": "teaching_red_star"})
    assert values["true"] == "red star"
    values = share.apply_query({"example": "teaching_red_star", "true": "blue heart"})
    assert values["true"] == "blue heart"
    values = share.apply_query({"example": "teaching_red_star", "labels": "cat\ndog"})
    assert "true" not in values, "a class the labels do not name cannot judge anything"
    query = share.share_query(_example("teaching_red_star"), assets.examples("teaching")[0][2], "pgd", 4, 10,
                              "oblivious", 0, "none", "none", "none", "blue heart")
    assert "true=blue+heart" in query


def test_the_page_computes_in_the_fp32_its_quoted_numbers_were_measured_in(model_key):
    import torch

    from demo.ui import build_demo

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as a GPU process may start
    try:
        build_demo(model_key)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
