"""The app launched on localhost and driven through every api_name with gradio_client, bad inputs included."""
import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

LABELS = "cat\ndog\ncar\ntree"
AUTO = "(clean prediction)"
NO_TARGET = "(none: untargeted)"


@pytest.fixture(scope="module")
def client(model_key, launch, tmp_path_factory):
    return Client(launch(model_key), verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")),
                  httpx_kwargs={"timeout": 300})


def classify(client, image, model_key, labels=LABELS):
    return client.predict(image=handle_file(image), labels_text=labels, true_label=AUTO, model_key=model_key,
                          api_name="/classify")


def compare_kwargs(image, model_key, attack_name, overrides=None, **more):
    kwargs = dict(image=handle_file(image), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                  attack_name=attack_name, eps=8, steps=2, target=NO_TARGET, mode="oblivious", seed=0,
                  training_time="none", test_time="none", training_free="none", attack_params="{}",
                  defense_params="{}")
    kwargs.update(overrides or {}, **more)
    return kwargs


def top(label_value) -> str:
    return label_value["label"]


def test_every_endpoint_is_documented(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/classify", "/attack", "/defend", "/compare", "/curve"} <= names


def test_classify(client, image_file, model_key):
    image, label, verdict = classify(client, image_file, model_key)
    assert image.endswith(".png")
    assert {c["label"] for c in label["confidences"]} == {"cat", "dog", "car", "tree"}
    assert "correct" in verdict


def test_attack_then_defend(client, image_file, model_key, attack_name):
    out = client.predict(image=handle_file(image_file), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                         attack_name=attack_name, eps=8, steps=2, target=NO_TARGET, seed=0, attack_params="{}",
                         api_name="/attack")
    clean_img, clean_label, _, adv_img, adv_label, adv_verdict, heatmap, adv_file, summary = out
    # What the page shows, what is downloaded and what was classified are the same pixels (lossless PNG).
    assert np.array_equal(np.asarray(Image.open(adv_img)), np.asarray(Image.open(adv_file)))
    assert heatmap.endswith(".png") and "Largest pixel change" in summary
    again = classify(client, adv_file, model_key)[1]
    assert top(again) == top(adv_label)
    for a, b in zip(again["confidences"], adv_label["confidences"]):
        assert a["label"] == b["label"] and abs(a["confidence"] - b["confidence"]) < 1e-5
    defended = client.predict(image=handle_file(image_file), adversarial=handle_file(adv_file), labels_text=LABELS,
                              true_label=AUTO, model_key=model_key, training_time="none", test_time="none",
                              training_free="none", defense_params="{}", seed=0, api_name="/defend")
    assert len(defended) == 16  # three outputs per defense column (one per paradigm and the stack), then four
    assert top(defended[1]) == top(adv_label)


def test_compare_json_returns_the_comparison_as_one_document(client, image_file, model_key, attack_name):
    data = client.predict(**compare_kwargs(image_file, model_key, attack_name), api_name="/compare_json")
    assert isinstance(data, dict) and data["model"] == model_key
    assert [c["column"] for c in data["columns"]] == ["clean", "attacked", "training-time", "test-time",
                                                      "training-free", "stacked"]
    assert all(c["prediction"] in data["labels"] and isinstance(c["correct"], bool) for c in data["columns"])
    # the same numbers as the /compare download
    out = client.predict(**compare_kwargs(image_file, model_key, attack_name), api_name="/compare")
    saved = json.loads(open(out[23], encoding="utf-8").read())
    assert [c["prediction"] for c in saved["columns"]] == [c["prediction"] for c in data["columns"]]
    with pytest.raises(AppError, match="list of choices"):
        client.predict(**compare_kwargs(image_file, model_key, attack_name, {"mode": "sideways"}), api_name="/compare_json")


def test_compare_json_stacks_the_chosen_defenses_attacked_through_the_whole_stack(client, image_file, model_key,
                                                                                 attack_name):
    """The sixth column runs the chosen test-time and training-free defenses in one pipeline; in adaptive
    mode it gets its own attack, through the whole stack."""
    data = client.predict(**compare_kwargs(image_file, model_key, attack_name, {
        "mode": "adaptive", "test_time": "tpt", "training_free": "bit_depth",
        "defense_params": '{"tpt": {"views": 4}}'}), api_name="/compare_json")
    stacked = data["columns"][-1]
    assert stacked["column"] == "stacked" and stacked["defense"] == "stack"
    assert stacked["changed"]["parts"] == {"training_time": "none", "test_time": "tpt", "training_free": "bit_depth"}
    assert stacked["adaptive_attack"] is not None and stacked["adaptive_attack"]["grad_passes"] > 0
    assert "at its defaults" in stacked["summary"]  # the page's 4 views were not the stack's
    assert any(s["stage"].startswith("attack through Stacked") for s in data["stages"])


def test_population_is_an_endpoint_and_explains_the_teaching_world(client, model_key, attack_name):
    assert "/population" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    with pytest.raises(AppError, match="teaching world"):
        client.predict(model_key=model_key, attack_name=attack_name, eps=4, steps=2, mode="oblivious", seed=0,
                       training_time="none", test_time="none", training_free="none", attack_params="{}",
                       defense_params="{}", n_images=2, api_name="/population")


def test_compare_and_curve(client, image_file, model_key, attack_name):
    out = client.predict(**compare_kwargs(image_file, model_key, attack_name), api_name="/compare")
    assert len(out) == 26
    labels = [out[i] for i in range(1, 18, 3)]
    assert all(lab and lab["confidences"] for lab in labels)
    timing = out[21]
    assert timing["data"][-1][0] == "total"
    results = json.loads(open(out[23], encoding="utf-8").read())
    assert len(results["columns"]) == 6 and results["model"] == model_key
    strip = out[25]  # the phone's one-line summary: every column's name and verdict
    assert strip.count("strip-item") == 6 and all(name in strip for name in ("Clean", "Attacked", "Training-free",
                                                                               "All three"))
    curve = client.predict(image=handle_file(image_file), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                           attack_name=attack_name, steps=2, target=NO_TARGET, mode="oblivious", seed=0,
                           training_time="none", test_time="none", training_free="none", attack_params="{}",
                           defense_params="{}", eps_list="0, 2, 4", api_name="/curve")
    assert curve[0].endswith(".png") and len(curve[1]["data"]) == 3


# Some values are refused by the page's own components (slider ranges, dropdown choices) before any
# handler runs; their messages are Gradio's and clear enough.
BAD = [
    ({"labels_text": ""}, "No labels"),
    ({"labels_text": "cat"}, "at least two"),
    ({"labels_text": "cat\ncat"}, "Duplicate"),
    ({"labels_text": "\n".join(f"l{i}" for i in range(101))}, "too many"),
    ({"eps": 500}, "out of range|greater than maximum"),
    ({"steps": 0}, "out of range|less than minimum"),
    ({"true_label": "dog", "target": "dog"}, "target label"),
    ({"defense_params": "{oops"}, "JSON"),
    ({"model_key": "vit-l-14-fare2-but-not-offered"}, "Unknown model|not in the list of choices"),
    ({"eps": None}, "must be a finite number, got None"),
    ({"eps": "abc"}, "must be a finite number, got 'abc'"),
    ({"steps": None}, "must be a finite number"),
    ({"seed": "abc"}, "Seed must be a finite number"),
    ({"attack_params": '{"random_start": "false"}'}, "must be true or false"),
    ({"attack_params": "[" * 3000 + "]" * 3000}, "nested too deeply"),
    ({"attack_params": json.dumps({"alpha": 1, "note": "x" * 20000})}, "characters long"),
    ({"attack_params": '{"alpha": NaN}'}, "must be a number"),
    ({"test_time": "rtpt", "defense_params": '{"rtpt": {"views": 8, "top_k": 20}}'}, "must be fewer than the views"),
    ({"attack_name": "embedding_pgd", "mode": "adaptive", "training_free": "ttc"}, "attacks the image embedding"),
]
# Words that would mean an internal detail reached the visitor.
INTERNAL = ("Module", "object has no attribute", "Traceback", "upstream Gradio app")


def test_bad_inputs_and_the_server_keeps_serving(client, image_file, model_key, attack_name, odd_files):
    for overrides, message in BAD:
        with pytest.raises(AppError, match=message) as info:
            client.predict(**compare_kwargs(image_file, model_key, attack_name, overrides), api_name="/compare")
        assert not any(word in str(info.value) for word in INTERNAL), (overrides, str(info.value))
    with pytest.raises(AppError, match="image"):
        classify(client, odd_files["not_an_image"], model_key)
    for name in ("rgba", "sixteen", "cmyk", "animated", "tiny", "huge", "gray", "palette"):
        assert classify(client, odd_files[name], model_key)[1]["confidences"], name
    assert classify(client, image_file, model_key)[1]["label"]


def test_curve_eps_must_be_finite(client, image_file, model_key, attack_name):
    with pytest.raises(AppError, match="finite"):
        client.predict(image=handle_file(image_file), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                       attack_name=attack_name, steps=2, target=NO_TARGET, mode="oblivious", seed=0,
                       training_time="none", test_time="none", training_free="none", attack_params="{}",
                       defense_params="{}", eps_list="0, nan", api_name="/curve")


def test_oversized_upload_is_refused(client, image_file, model_key, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(26 * 1024 * 1024))
    with pytest.raises(Exception):
        classify(client, str(big), model_key)
    assert classify(client, image_file, model_key)[1]["label"]


def test_concurrent_clients_get_their_own_answers(client, image_file, model_key, attack_name, odd_files):
    """Two requests in flight at once return exactly what each returns alone."""
    requests = [compare_kwargs(image_file, model_key, attack_name, seed=1),
                compare_kwargs(odd_files["rgba"], model_key, attack_name, seed=2, labels_text="red\ngreen\nblue")]

    def essence(out):
        data = json.loads(open(out[23], encoding="utf-8").read())
        for col in data["columns"]:
            col.pop("ms"), col.pop("adaptive_attack")
        data.pop("stages")
        return data, np.asarray(Image.open(out[22]))

    alone = [essence(client.predict(**r, api_name="/compare")) for r in requests]
    jobs = [client.submit(**r, api_name="/compare") for r in requests]
    together = [essence(job.result(timeout=300)) for job in jobs]
    for (a_data, a_png), (b_data, b_png) in zip(alone, together):
        assert a_data == b_data and np.array_equal(a_png, b_png)


HUGE = 2**70


@pytest.mark.parametrize("field,value", [
    ("seed", HUGE), ("seed", -1), ("eps", HUGE), ("steps", HUGE), ("steps", -HUGE), ("eps", -1),
    ("attack_params", json.dumps({"alpha": HUGE})), ("attack_params", json.dumps({"random_start": HUGE})), ("defense_params", json.dumps({"jpeg": {"quality": HUGE}})),
])
def test_every_number_out_of_range_gets_a_message(client, image_file, model_key, attack_name, field, value):
    """Each numeric input of /compare_json (the same inputs as /compare) with an absurd value: the answer
    is a message naming the problem, never Gradio's generic 'The upstream Gradio app has raised an exception'."""
    kwargs = compare_kwargs(image_file, model_key, "pgd", {field: value}, training_free="jpeg")
    with pytest.raises(AppError) as err:
        client.predict(**kwargs, api_name="/compare_json")
    message = str(err.value)
    assert "upstream Gradio app" not in message and "went wrong" not in message, message
    assert len(message) > 20, message
