"""Handlers: UI values in, UI values out, on the tiny model; bad input becomes a clear gr.Error."""
import asyncio
import json
import os
import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo.pipeline import PARADIGMS
from demo.registry import ATTACKS, DEFENSES
from demo.ui import explore, handlers, jobs, model_status, panels, views
from demo.ui.handlers import ADAPTIVE, AUTO_TRUE, NO_TARGET, OBLIVIOUS

LABELS_TEXT = "cat\ndog\ncar\ntree"

GENERIC = "Something went wrong"


def compare(image, model_key, allowed, attack_name, **overrides):
    args = dict(image=image, labels_text=LABELS_TEXT, true_label=AUTO_TRUE, model_key=model_key,
                attack_name=attack_name, eps=8, steps=2, target=NO_TARGET, mode=OBLIVIOUS, seed=0,
                training_time="none", test_time="none", training_free="none", attack_params="{}",
                defense_params="{}")
    args.update(overrides)
    return handlers.compare(**args, allowed=allowed)


def cheap_free_defense():
    import demo.defenses  # noqa: F401
    return next((n for n in ("bit_depth", "jpeg", "median") if n in DEFENSES), "none")


# ------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text, labels", [
    ("cat\ndog\n\n tree ", ["cat", "dog", "tree"]),
    ("cat, dog,tree", ["cat", "dog", "tree"]),
    ("a photo of a dog, running\nzebra", ["a photo of a dog, running", "zebra"]),
    ("", []),
    (None, []),
])
def test_parse_labels(text, labels):
    assert handlers.parse_labels(text) == labels


def test_label_index():
    labels = ["cat", "Dog"]
    assert handlers.label_index(AUTO_TRUE, labels, "true label") is None
    assert handlers.label_index(NO_TARGET, labels, "target") is None
    assert handlers.label_index("dog", labels, "target") == 1
    with pytest.raises(ValueError, match="not one of the labels"):
        handlers.label_index("car", labels, "target")


def test_ui_units_become_pixels():
    name = next((n for n in ATTACKS.names() if any(f.metadata.get("unit") == "/255" for f in ATTACKS.get(n).params())),
                None)
    if name is None:
        pytest.skip("no attack with a /255 parameter")
    _, params = handlers.attack_settings(name, 8, 3, "{}")
    assert abs(params["eps"] - 8 / 255) < 1e-12


# ------------------------------------------------------------------------------------ handlers

def test_select_model(model_key, allowed):
    status, teaching = model_status.select_model(model_key, allowed=allowed)
    assert "Model:" in status and teaching is False
    with pytest.raises(gr.Error, match="Unknown model"):
        model_status.select_model("/etc/passwd", allowed=allowed)


def test_classify(image_file, model_key, allowed):
    view = handlers.classify(image_file, LABELS_TEXT, AUTO_TRUE, model_key, allowed=allowed)
    assert view.image.dtype == np.uint8 and view.image.shape[2] == 3
    assert set(view.label) <= {"cat", "dog", "car", "tree"} and len(view.label) == 4
    assert abs(sum(view.label.values()) - 1) < 1e-4
    assert "correct" in view.verdict and "assumed" in view.verdict
    wrong = handlers.classify(image_file, LABELS_TEXT, next(k for k in ("cat", "dog", "car") if k != max(
        view.label, key=view.label.get)), model_key, allowed=allowed)
    assert "wrong" in wrong.verdict


def test_compare_outputs(image_file, model_key, allowed, attack_name):
    free = cheap_free_defense()
    view = compare(image_file, model_key, allowed, attack_name, training_free=free)
    values = handlers.flat(view)
    assert len(values) == 6 * 3 + 8
    for column in (view.clean, view.attacked, view.training_time, view.test_time, view.training_free, view.stacked):
        assert column.image is not None and column.label and column.verdict
    assert view.heatmap.dtype == np.uint8 and view.timing_chart.dtype == np.uint8
    assert view.timing_table[-1][0] == "total" and view.timing_table[-1][1] > 0
    if free != "none":
        assert view.changes is not None
    # The downloaded PNG is exactly the attacked column's image ...
    png = np.asarray(Image.open(view.adversarial_file))
    assert np.array_equal(png, view.attacked.image)
    # ... and classifying it again gives the attacked column's prediction.
    again = handlers.classify(view.adversarial_file, LABELS_TEXT, AUTO_TRUE, model_key, allowed=allowed)
    assert max(again.label, key=again.label.get) == max(view.attacked.label, key=view.attacked.label.get)
    for k, p in view.attacked.label.items():
        assert abs(again.label[k] - p) < 1e-5
    data = json.loads(open(view.results_file, encoding="utf-8").read())
    assert [c["column"] for c in data["columns"]] == ["clean", "attacked", "training-time", "test-time",
                                                      "training-free", "stacked"]
    if ATTACKS.get(attack_name).norm == "linf":
        assert data["attack"]["linf_255"] <= 8 + 1e-6
    assert "Largest pixel change" in view.summary


def test_attack_and_defend(image_file, model_key, allowed, attack_name):
    attacked = handlers.attack(image_file, LABELS_TEXT, AUTO_TRUE, model_key, attack_name, 8, 2, NO_TARGET, 0, "",
                               allowed=allowed)
    assert np.array_equal(np.asarray(Image.open(attacked.adversarial_file)), attacked.attacked.image)
    free = cheap_free_defense()
    defended = handlers.defend(image_file, attacked.adversarial_file, LABELS_TEXT, AUTO_TRUE, model_key, "none", "none",
                               free, "{}", 0, allowed=allowed)
    assert len(handlers.flat(defended)) == 4 * 3 + 4  # one per paradigm and their stack
    # With "none" everywhere, each defense column repeats the undefended prediction on the attacked image.
    assert defended.training_time.label.keys() == attacked.attacked.label.keys()
    for k, p in attacked.attacked.label.items():
        assert abs(defended.training_time.label[k] - p) < 1e-5
    no_attack = handlers.defend(image_file, None, LABELS_TEXT, AUTO_TRUE, model_key, "none", "none", "none", "", 0,
                                allowed=allowed)
    assert "correct" in no_attack.test_time.verdict


def test_curve(image_file, model_key, allowed, attack_name):
    if not any(f.name == "eps" for f in ATTACKS.get(attack_name).params()):
        pytest.skip("attack has no eps")
    free = cheap_free_defense()
    view = explore.curve(image_file, LABELS_TEXT, AUTO_TRUE, model_key, attack_name, 2, NO_TARGET, OBLIVIOUS, 0,
                          "none", "none", free, "", "", "0, 4", allowed=allowed)
    assert view.chart.dtype == np.uint8
    assert len(view.table) == 2 * (2 if free != "none" else 1)
    assert json.loads(open(view.results_file).read())["eps_255"] == [0.0, 4.0]


def test_odd_images_work(odd_files, model_key, allowed):
    for name, path in odd_files.items():
        if name == "not_an_image":
            continue
        view = handlers.classify(path, LABELS_TEXT, AUTO_TRUE, model_key, allowed=allowed)
        assert view.image.shape[:2] == (32, 32), name


@pytest.mark.parametrize("overrides, message", [
    ({"image": None}, "No image"),
    ({"labels_text": ""}, "No labels"),
    ({"labels_text": "cat"}, "at least two"),
    ({"labels_text": "cat\ndog\nCat"}, "Duplicate"),
    ({"labels_text": "\n".join(f"thing {i}" for i in range(150))}, "too many"),
    ({"labels_text": "cat\n" + "very long " * 20}, "characters"),
    ({"eps": 9999}, "out of range"),
    ({"steps": 0}, "out of range"),
    ({"steps": 100000}, "out of range"),
    ({"true_label": "cat", "target": "cat"}, "target label"),
    ({"true_label": "zebra"}, "not one of the labels"),
    ({"seed": -3}, "seed"),
    ({"seed": "abc"}, "seed"),
    ({"mode": "sideways"}, "attack mode"),
    ({"model_key": "ViT-B-32=/etc/hosts"}, "Unknown model"),
    ({"attack_name": "nope"}, "Unknown attack"),
    ({"training_free": "nope"}, "Unknown defense"),
    ({"defense_params": "{not json"}, "not valid JSON"),
    ({"defense_params": "[1, 2]"}, "JSON object"),
    ({"attack_params": '{"no_such_param": 1}'}, "no parameter"),
])
def test_bad_inputs_give_clear_errors(image_file, model_key, allowed, attack_name, overrides, message):
    args = {"image": image_file, "model_key": model_key, "allowed": allowed, "attack_name": attack_name}
    args.update(overrides)
    with pytest.raises(gr.Error) as err:
        compare(args.pop("image"), args.pop("model_key"), args.pop("allowed"), args.pop("attack_name"), **args)
    assert message.lower() in err.value.message.lower()
    assert GENERIC not in err.value.message


def test_unreadable_file(odd_files, model_key, allowed):
    with pytest.raises(gr.Error, match="not an image"):
        handlers.classify(odd_files["not_an_image"], LABELS_TEXT, AUTO_TRUE, model_key, allowed=allowed)


def test_every_registered_attack_runs_or_explains(image_file, model_key, allowed):
    import demo.attacks  # noqa: F401
    for name in ATTACKS.names():
        try:
            view = handlers.attack(image_file, LABELS_TEXT, AUTO_TRUE, model_key, name, None, 2, NO_TARGET, 0, "",
                                   allowed=allowed)
        except gr.Error as exc:
            assert GENERIC not in exc.message, (name, exc.message)
        else:
            assert view.attacked.label, name


def test_every_registered_defense_runs_or_explains(image_file, model_key, allowed):
    """Each defense (with its parameters given in UI units) works on this model or says why not."""
    import demo.defenses  # noqa: F401
    for name in DEFENSES.names():
        cls = DEFENSES.get(name)
        ui_params = {f.name: (f.default * 255 if f.metadata.get("unit") == "/255" else f.default)
                     for f in cls.params() if isinstance(f.default, (int, float))}
        # Cheapest settings, so the loop stays fast: fewest views/steps the metadata allows.
        for f in cls.params():
            if f.name in ("views", "steps", "eot_draws") and f.metadata.get("lo") is not None:
                ui_params[f.name] = max(f.metadata["lo"], 2 if f.name == "views" else f.metadata["lo"])
        chosen = {p.value: "none" for p in PARADIGMS}
        chosen[cls.paradigm.value if name != "none" else "training-free"] = name
        try:
            view = handlers.defend(image_file, None, LABELS_TEXT, AUTO_TRUE, model_key, chosen["training-time"],
                                   chosen["test-time"], chosen["training-free"], json.dumps({name: ui_params}), 0,
                                   allowed=allowed)
        except gr.Error as exc:
            assert GENERIC not in exc.message, (name, exc.message)
        else:
            assert all(c.label for c in (view.training_time, view.test_time, view.training_free)), name


def test_adaptive_mode(image_file, model_key, allowed, attack_name):
    free = cheap_free_defense()
    if free == "none":
        pytest.skip("no input-transform defense registered")
    view = compare(image_file, model_key, allowed, attack_name, mode=ADAPTIVE, training_free=free)
    assert any(row[0].startswith("attack through") for row in view.timing_table)
    # each defense's own attack gets its own row in the perturbation figure (one row is ~the oblivious height)
    oblivious = compare(image_file, model_key, allowed, attack_name, training_free=free)
    assert view.heatmap.shape[0] > 1.8 * oblivious.heatmap.shape[0]


def test_same_request_same_answer(image_file, model_key, allowed, attack_name):
    a = compare(image_file, model_key, allowed, attack_name, seed=3)
    b = compare(image_file, model_key, allowed, attack_name, seed=3)
    assert np.array_equal(a.attacked.image, b.attacked.image) and a.attacked.label == b.attacked.label


# ------------------------------------------------------------------------------------ stopping

def test_stop_token_ends_a_run(image_file, model_key, allowed, attack_name):
    from demo.ui.wiring import long_event

    event = long_event(handlers.compare, allowed)
    token = jobs.new_token()
    calls = []

    def progress(fraction, desc=""):
        calls.append(fraction)
        jobs.request_stop(token)  # the user presses Stop during the first stage

    args = [image_file, LABELS_TEXT, AUTO_TRUE, model_key, attack_name, 8, 50, NO_TARGET, OBLIVIOUS, 0, "none",
            "none", "none", "{}", "{}", token]
    with pytest.raises(gr.Error, match="Stopped"):
        asyncio.run(event(*args, progress=progress))
    assert len(calls) == 1
    # The next run starts with a fresh token state and finishes.
    values = asyncio.run(event(*args[:-1], jobs.new_token(), progress=lambda *a, **k: None))
    assert len(values) == 6 * 3 + 8


def test_a_stop_inside_a_defense_loop_ends_the_run_within_one_encoder_pass(tiny_clf, tiny_images):
    """The library checks the stop flag before every encoder pass, so even a loop with no progress
    reports (TTC's counterattack steps, TPT's views) stops at once, with nothing of the run leaking afterwards."""
    from demo.defenses import DEFENSES
    from demo.timing import cancellable, count_passes

    ttc = DEFENSES.create("ttc", steps=5, calibrated=False, tau_thres=2.0)  # 7 encoder calls when left alone
    calls = []
    with count_passes(on_pass=lambda c: calls.append(c.total)):
        with pytest.raises(jobs.Cancelled), cancellable(lambda: len(calls) >= 3):
            ttc(tiny_clf, tiny_images, seed=0)
    assert len(calls) == 3  # the fourth encoder call was refused
    assert ttc(tiny_clf, tiny_images, seed=0).logits.shape == (3, 4)


def test_a_cancelled_event_sets_the_stop_flag_of_its_thread():
    """Cancelling the event's task (an API cancel, the page's Stop) stops the work in its thread."""
    from demo.timing import check_cancelled
    from demo.ui import zerogpu

    seen = []

    def work(progress, emit):
        for _ in range(200):
            try:
                check_cancelled()
            except jobs.Cancelled:
                seen.append("stopped")
                raise
            time.sleep(0.01)
        return "finished"

    task = zerogpu.register(work)

    async def main():
        async def consume():
            async for _ in jobs.run(task, (), jobs.new_token()):
                pass

        running = asyncio.ensure_future(consume())
        await asyncio.sleep(0.1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert seen == ["stopped"]


def test_download_files_do_not_collide():
    a, b = views.new_download_dir(), views.new_download_dir()
    assert a != b and a.parent == b.parent


def test_figures_are_stored_losslessly(tmp_path, monkeypatch):
    """Figures skip gradio's slow PNG setting, not its losslessness: the stored file has the exact pixels."""
    from demo.ui.components import figure_box

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    box = figure_box(label="figure")
    box.GRADIO_CACHE = str(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    data = box.postprocess(pixels)
    assert data.path.endswith(".png") and data.path.startswith(str(tmp_path.resolve()))
    assert np.array_equal(np.asarray(Image.open(data.path)), pixels)
    assert box.postprocess(pixels).path == data.path  # same content, same file
    assert box.postprocess(None) is None


def test_identical_results_of_concurrent_requests_never_rewrite_a_file_being_read(tmp_path):
    """Result images are content-addressed: two requests with the same picture share a path. Gradio's own
    cache rewrites that file on every request, so a download running meanwhile could read a truncated
    file; here the file is written once, atomically, and every read sees the whole PNG."""
    import threading

    from demo.ui.components import cache_png

    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = cache_png(str(tmp_path), pixels).path
    mtime = os.stat(path).st_mtime_ns
    errors, stop = [], threading.Event()

    def write():
        while not stop.is_set():
            assert cache_png(str(tmp_path), pixels).path == path

    def read():
        for _ in range(200):
            try:
                assert np.array_equal(np.asarray(Image.open(path)), pixels)
            except Exception as exc:  # a truncated file would fail to decode
                errors.append(exc)

    writers = [threading.Thread(target=write) for _ in range(4)]
    for t in writers:
        t.start()
    read()
    stop.set()
    for t in writers:
        t.join()
    assert not errors and os.stat(path).st_mtime_ns == mtime
    assert not list(tmp_path.rglob("*.part"))


def test_classify_says_which_model_answered_when_it_fell_back(image_file):
    """Offline, a hub model falls back to the teaching model; the answer must say so, not pass as the hub's."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    image, label, verdict = handlers.classify(image_file, "red star\nblue heart", AUTO_TRUE, "vit-b-32",
                                              allowed={"vit-b-32"})
    assert label and "Answered by Teaching model" in verdict and "not vit-b-32" in verdict


def test_input_note_says_what_the_model_sees(tmp_path, model_key, allowed):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(wide)
    note = model_status.seen_by_model(str(wide), model_key, allowed=allowed)[0]
    assert "640 x 480" in note and "160 px were cut off" in note and "left and right" in note
    square = tmp_path / "square.png"
    Image.new("RGB", (300, 300)).save(square)
    assert "resized to" in model_status.seen_by_model(str(square), model_key, allowed=allowed)[0]
    assert model_status.seen_by_model(None, model_key, allowed=allowed)[0] == ""


def test_the_model_view_is_the_cropped_and_resized_input(tmp_path, model_key, allowed):
    from demo.ui.models import get_model

    wide = tmp_path / "wide.png"
    pixels = np.zeros((480, 640, 3), np.uint8)
    pixels[:, :80] = 255  # white strip on the left: outside the central square, the model never sees it
    Image.fromarray(pixels).save(wide)
    view = model_status.seen_by_model(str(wide), model_key, allowed=allowed)[1]
    side = get_model(model_key, allowed)[0].image_size
    assert view.shape == (side, side, 3) and view.dtype == np.uint8 and view.max() == 0
    assert model_status.seen_by_model(None, model_key, allowed=allowed)[1] is None
    assert model_status.seen_by_model(str(tmp_path / "missing.png"), model_key, allowed=allowed) == ("", None, "")


def test_attack_steps_for_the_scrubber(image_file, model_key, allowed):
    view = explore.record_steps(image_file, LABELS_TEXT, AUTO_TRUE, model_key, "pgd", 8, 4, NO_TARGET, 0, "",
                                 allowed=allowed)
    frames = view.state["frames"]
    assert len(frames) == 5  # the start of each of the 4 steps, then the final image
    clean = np.asarray(view.state["clean"], dtype=np.int16)
    for f in frames:  # every frame is a real 8-bit image inside the budget
        assert np.abs(np.asarray(f, dtype=np.int16) - clean).max() <= 8
    assert np.array_equal(frames[-1], view.frame) and "Step 4 of 4" in view.caption
    frame, heat, chart, caption = explore.show_step(view.state, 2)
    assert np.array_equal(frame, frames[2]) and "Step 2 of 4" in caption and chart.ndim == 3
    with pytest.raises(gr.Error, match="Record"):
        explore.show_step(None, 0)
    with pytest.raises(gr.Error, match="does not expose its steps"):
        explore.record_steps(image_file, LABELS_TEXT, AUTO_TRUE, model_key, "embedding_pgd", 4, 2, NO_TARGET, 0,
                              "", allowed=allowed)


def test_the_selector_shows_the_model_that_answers():
    # Offline, a hub model falls back to the teaching model: the selector must say so, not the one asked for.
    allowed = {"vit-b-32", "teaching"}
    assert model_status.answering_model("vit-b-32", allowed=allowed) == "teaching"
    assert model_status.answering_model("teaching", allowed=allowed) == "teaching"
    assert model_status.answering_model("nope", allowed=allowed) == "nope"  # refused elsewhere, with a message


def test_the_noise_attack_is_offered_with_its_kind_control(image_file, model_key, allowed):
    from demo.ui.page import Page

    with gr.Blocks():
        page = Page()
        panels._param_groups(page, "attack", ["noise"], "noise")
    assert "kind" in page.param_groups[0].controls
    args = (image_file, LABELS_TEXT, AUTO_TRUE, model_key, "noise", 4, 1, NO_TARGET, OBLIVIOUS, 0, "none", "none",
            "none")
    data = handlers.compare_json(*args, '{"kind": "gaussian"}', allowed=allowed)
    assert data["attack"]["name"] == "noise" and data["attack"]["params"]["kind"] == "gaussian"
    with pytest.raises(gr.Error, match="noise kind"):
        handlers.compare_json(*args, '{"kind": "pink"}', allowed=allowed)


def test_a_scene_with_an_attack_without_steps_keeps_its_steps_slider():
    from demo.ui import wiring
    from demo.ui.page import Page

    with gr.Blocks():
        page = Page()
        panels.build_labels(page, [("m", "m")], "m", "", False)
        panels.build_run(page)
    controls = wiring.setup_controls(page)
    updates = wiring.setup_updates(page, {"attack": "noise", "eps": 4, "steps": 10})
    steps = updates[controls.index(page.steps)]
    assert steps.visible is False and steps.value <= steps.maximum
