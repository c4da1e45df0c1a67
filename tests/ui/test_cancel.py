"""No request holds the server: a cancelled API job and a client that goes away both stop the computation.

The app runs in this process, so the process's CPU time is the server's (the test itself only sleeps).
"""
import os
import time
import uuid

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from test_api import AUTO, LABELS, NO_TARGET  # noqa: E402  (tests/ui is on the path)

# The heaviest request the page's controls allow (on the tiny model it runs for minutes).
HEAVY_DEFENSES = '{"rtpt": {"views": 128, "steps": 8}, "ttc": {"steps": 10, "eot_draws": 16}}'


@pytest.fixture(scope="module")
def app_url(model_key, launch, monkeypatch_module):
    monkeypatch_module.setenv("DEMO_MAX_SECONDS", "100000")  # this test wants the heavy run to start
    return launch(model_key)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def heavy(image, model_key):
    return dict(image=handle_file(image), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                attack_name="apgd_ce", eps=8, steps=200, target=NO_TARGET, mode="adaptive", seed=0,
                training_time="none", test_time="rtpt", training_free="ttc", attack_params="{}",
                defense_params=HEAVY_DEFENSES)


def wait_until_running(job, timeout=60.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status = job.status()
        if status.code in (Status.PROCESSING, Status.PROGRESS):
            time.sleep(1.0)  # well inside the computation
            return
        if job.done():
            raise AssertionError(f"the heavy request ended before it was cancelled: {job.exception()!r}")
        time.sleep(0.1)
    raise AssertionError(f"the heavy request never started (status {status.code})")


def cpu_seconds_over(seconds: float) -> float:
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


def assert_server_idles_and_answers(url, image, model_key):
    time.sleep(2.0)  # the stop must land within this
    busy = cpu_seconds_over(1.0)
    assert busy < 0.3, f"the server still computed {busy:.2f} CPU-seconds per second after the stop"
    client = Client(url, verbose=False)
    start = time.monotonic()
    out = client.predict(image=handle_file(image), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                         api_name="/classify")
    assert out[1]["label"] and time.monotonic() - start < 10


def test_a_cancelled_job_stops_computing(app_url, image_file, model_key):
    client = Client(app_url, verbose=False)
    job = client.submit(**heavy(image_file, model_key), api_name="/compare")
    wait_until_running(job)
    assert cpu_seconds_over(0.5) > 0.05  # it really is computing
    assert job.cancel()
    assert_server_idles_and_answers(app_url, image_file, model_key)


def test_a_client_that_goes_away_stops_its_run(app_url, image_file, model_key):
    """Speaks Gradio's queue protocol over plain HTTP, as the page does, then drops the event stream
    the way a closed tab does."""
    import httpx

    config = httpx.get(app_url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "compare")
    with open(image_file, "rb") as f:
        uploaded = httpx.post(app_url + "gradio_api/upload", files={"files": f}).json()[0]
    args = heavy(image_file, model_key)
    args["image"] = {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": "photo.png"}
    session = uuid.uuid4().hex
    order = ["image", "labels_text", "true_label", "model_key", "attack_name", "eps", "steps", "target", "mode",
             "seed", "training_time", "test_time", "training_free", "attack_params", "defense_params", "crafted_on"]
    joined = httpx.post(app_url + "gradio_api/queue/join", json={
        "data": [args.get(k, "") for k in order] + [None], "fn_index": fn_index, "session_hash": session,
        "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", app_url + "gradio_api/queue/data", params={"session_hash": session},
                      timeout=60) as stream:
        started = None
        for line in stream.iter_lines():
            started = started or (time.monotonic() if "process_starts" in line else None)
            if started and time.monotonic() - started > 1.0:
                break
        assert cpu_seconds_over(0.5) > 0.05  # it really is computing
    # leaving the block closes the connection, as a closed tab does
    assert_server_idles_and_answers(app_url, image_file, model_key)


def test_a_cheap_request_runs_beside_a_heavy_one(app_url, image_file, model_key):
    """A one-step attack and a classification answer while the heaviest request holds the compute slot."""
    client = Client(app_url, verbose=False)
    job = client.submit(**heavy(image_file, model_key), api_name="/compare")
    wait_until_running(job)
    try:
        start = time.monotonic()
        out = client.predict(image=handle_file(image_file), labels_text=LABELS, true_label=AUTO, model_key=model_key,
                             attack_name="fgsm", eps=8, steps=1, target=NO_TARGET, seed=0, attack_params="{}",
                             api_name="/attack")
        assert "FGSM" in out[-1] and time.monotonic() - start < 10
        # The heavy run is still going: computing, reporting progress, or streaming a finished column.
        assert job.status().code in (Status.PROCESSING, Status.PROGRESS, Status.ITERATING, Status.LOG)
    finally:
        job.cancel()
    assert_server_idles_and_answers(app_url, image_file, model_key)


def test_the_clean_column_shortcut_is_bounded_and_never_waits():
    """Run all's clean column runs outside the queue: with its slots taken it skips instead of waiting,
    and an input problem is left to the comparison to report (no second error)."""
    import threading

    import gradio as gr

    from demo.ui.wiring import clean_first_event

    inside, release = threading.Event(), threading.Event()

    def slow_classify(*args):
        inside.set()
        release.wait(10)
        return ("image", {"cat": 1.0}, "ok")

    fn = clean_first_event(slow_classify, limit=1)
    busy = threading.Thread(target=fn, args=("x",))
    busy.start()
    assert inside.wait(10)
    skipped = fn("y")
    release.set()
    busy.join(10)
    assert all(v == gr.skip() for v in skipped) and len(skipped) == 3
    assert fn("z") == ("image", {"cat": 1.0}, "ok")  # the slot is free again

    def refusing(*args):
        raise gr.Error("Please give at least two labels.")

    assert all(v == gr.skip() for v in clean_first_event(refusing, 1)("x"))


def _listeners(config: dict, elem_id: str) -> list[dict]:
    """The listeners of one button's click, in the order the page runs them."""
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id}
    return [d for d in config["dependencies"] if any(t[0] in ids and t[1] == "click" for t in d["targets"])]


def test_a_stop_right_after_run_all_is_not_undone(model_key):
    """The page awaits a button's unqueued answers one listener after another, so anything behind the
    clean-column shortcut waits for it. A Stop pressed meanwhile would then be undone: the start mark clears
    "stopped" afterwards, and the comparison is only submitted afterwards, too late to be cancelled. So on
    Run all every browser-only or queued listener comes before the unqueued server call, and Stop marks the
    results first."""
    from demo.ui import build_demo

    config = build_demo(model_key).get_config_file()
    kinds = ["unqueued server call" if d.get("backend_fn") and d.get("queue") is False else "other"
             for d in _listeners(config, "run-btn")]
    assert "unqueued server call" in kinds
    first = kinds.index("unqueued server call")
    assert all(k == "unqueued server call" for k in kinds[first:]), kinds
    run_js = [d["js"] for d in _listeners(config, "run-btn") if d.get("js")]
    assert "classList.remove('stale')" in run_js[0]
    stop = _listeners(config, "stop-btn")
    assert stop[0].get("js") and "classList.add('stale')" in stop[0]["js"]
    new_image = {i for i, d in enumerate(config["dependencies"])
                 if any(t[1] == "change" for t in d["targets"]) and d.get("backend_fn")}
    assert any(set(d.get("cancels") or ()) & new_image for d in _listeners(config, "run-btn")), \
        "Run all must drop a still-pending clear for a just-picked image"
