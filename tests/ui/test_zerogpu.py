"""The app on a ZeroGPU Space, under the `spaces` package's own emulation (SPACES_ZERO_GPU=true): it
answers /classify and /compare_json as without it, /compare still streams column by column, and a request
neither registers a GPU function nor forks a GPU worker of its own.

The emulation patches torch for the whole process, so each app runs in a subprocess (SERVE below) on the
teaching model. Two things of a real Space are stood in for there: the device API that lends the GPU
(answered in-process through httpx's MockTransport), and the GPU itself: with no CUDA here, the worker
keeps the tensors that `spaces` recorded at startup on the CPU instead of moving them to the GPU.
Everything else, the import order, the patched torch in the server process, the forked worker, the
pickling of arguments and results, is `spaces`' own.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from demo.ui.views import RESULT_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "assets" / "examples" / "teaching_blue_heart.png"
LABELS = "blue heart\nred star\ngreen circle\nyellow square"

SERVE = r'''
import json, os, sys
emulated = os.environ.get("SPACES_ZERO_GPU") == "true"
if emulated:
    import spaces  # first, as app.py does on a Space
    import httpx
    from spaces.zero import api, client, decorator, wrappers
    from spaces.zero import torch as zero_torch
    from spaces.zero.torch import patching

    def device_api(request):
        if request.url.path == "/schedule":
            return httpx.Response(200, json={"idle": True, "nvidiaIndex": 0, "nvidiaUUID": "GPU-emulated",
                                             "allowToken": "lent"})
        return httpx.Response(200)

    client.api_client = lambda: api.APIClient(httpx.Client(base_url="http://device-api.invalid",
                                                           transport=httpx.MockTransport(device_api)))

    def keep_on_cpu(callback=None):
        for fake, original in patching.cuda_aliases.items():
            if original is not None:
                fake.data = original

    zero_torch.init = lambda nvidia_uuid: None
    zero_torch.pack = lambda: 0
    zero_torch.move = keep_on_cpu
    forks = []
    fork = wrappers.Worker.__init__
    wrappers.Worker.__init__ = lambda self, *a, **k: (forks.append(1), fork(self, *a, **k))[1]

import app
from gradio_client import Client, handle_file

_, url, _ = app.demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
client = Client(url, verbose=False)
image, labels = handle_file(sys.argv[1]), sys.argv[2]
request = dict(image=image, labels_text=labels, true_label="(clean prediction)", model_key="teaching")
comparison = dict(request, attack_name="pgd", eps=4, steps=3, target="(none: untargeted)", mode="adaptive",
                  seed=7, training_time="tecoa", test_time="tpt", training_free="jpeg", attack_params="{}",
                  defense_params='{"tpt": {"views": 8}}')
out = {"classify": client.predict(**request, api_name="/classify")[1:],
       "compare_json": client.predict(**comparison, api_name="/compare_json")}
streamed = list(client.submit(**comparison, api_name="/compare"))  # column by column, then the whole
out["compare_updates"], out["compare_verdicts"] = len(streamed), streamed[-1][-1]
if emulated:
    out["gpu_functions"] = len(decorator.decorated_cache)
    out["forks"] = len(forks)
    for _ in range(2):  # more requests: the same functions and workers
        client.predict(**request, api_name="/classify")
        client.predict(**comparison, api_name="/compare_json")
    out["gpu_functions_after"] = len(decorator.decorated_cache)
    out["forks_after"] = len(forks)
print("RESULT " + json.dumps(out))
app.demo.close()
'''


def serve(zerogpu: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "DEMO_"))}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", DEMO_MODEL="teaching",
               NO_PROXY="localhost,127.0.0.1", PYTHONPATH=str(ROOT))
    if not zerogpu:
        # A ZeroGPU worker computes on one thread (see `loading._fresh_locks`); the plain server does the
        # same, so the two answer alike to 1e-3. The ZeroGPU server keeps the CPU's threads, as on a Space,
        # and computes on them at startup before it forks a worker.
        env["OMP_NUM_THREADS"] = "1"
    if zerogpu:
        env.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL="http://device-api.invalid",
                   ZEROGPU_OFFLOAD_DIR=str(Path(os.environ.get("TMPDIR", "/tmp")) / "zerogpu-test"))
    done = subprocess.run([sys.executable, "-c", SERVE, str(IMAGE), LABELS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=500)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def assert_same_answers(got, want, path="") -> None:
    """Every label, verdict, text and count equal; every number equal to 1e-3. Two runs of the app
    without the emulation already differ in the sixth decimal of the adaptive defense columns
    (floating-point sums in another order), and wall times ("ms") differ in any two runs."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for key in want:
            if key != "ms":
                assert_same_answers(got[key], want[key], f"{path}/{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_answers(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-3), path
    else:
        assert got == want, path


@pytest.fixture(scope="module")
def answers():
    pytest.importorskip("spaces")
    return serve(zerogpu=False), serve(zerogpu=True)


def test_under_zerogpu_the_app_answers_exactly_as_without_it(answers):
    plain, zero = answers
    assert plain["classify"][0]["label"]  # a real answer, not an empty one
    assert zero["classify"] == plain["classify"]
    columns = plain["compare_json"]["columns"]
    assert len(columns) == len(RESULT_COLUMNS) and len({c["prediction"] for c in columns}) >= 1
    assert_same_answers(zero["compare_json"], plain["compare_json"])
    # /compare streams each column as it is ready, then the full result, across the GPU worker too.
    assert zero["compare_updates"] == plain["compare_updates"] == len(RESULT_COLUMNS) + 1
    assert zero["compare_verdicts"] == plain["compare_verdicts"]


def test_a_request_registers_no_gpu_function_and_forks_no_worker_of_its_own(answers):
    _, zero = answers
    assert zero["gpu_functions"] == zero["gpu_functions_after"] > 0
    # One worker per GPU function at most (a quick one, a long one), reused by every later request.
    assert 1 <= zero["forks"] == zero["forks_after"] <= 2


def test_the_front_matter_is_a_zerogpu_space_that_links_every_preloaded_model():
    import yaml

    front = yaml.safe_load((ROOT / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert str(front["python_version"]) in ("3.10", "3.12")  # the Pythons ZeroGPU runs
    preloaded = {entry.split()[0] for entry in front["preload_from_hub"]}
    assert preloaded and preloaded <= set(front["models"])
    assert front["tags"]


def test_a_long_run_asks_for_a_duration_from_its_gpu_passes(image_file, model_key, allowed):
    """The duration is priced in the server process from the request's settings alone (its models are
    placeholders there): its encoder passes times the estimated GPU pass costs; a refused request asks
    for a quick one."""
    from demo.ui import handlers, models, zerogpu

    models.get_model(model_key, allowed)  # loaded, as at startup
    from demo.ui.events import _pricer

    key = zerogpu.register(lambda *a, **k: None, price=_pricer(handlers.compare, allowed))
    task = zerogpu._TASKS[key]

    def request(attack="pgd", steps=5, views=8):
        return (image_file, "cat\ndog", "(clean prediction)", model_key, attack, 4, steps, "(none: untargeted)",
                handlers.OBLIVIOUS, 0, "none", "tpt", "none", "{}", json.dumps({"tpt": {"views": views}}))

    small, large = zerogpu.request_seconds(task, request()), zerogpu.request_seconds(task, request(steps=50, views=64))
    assert 0 < small < large
    passes, loaded = task.price(request(steps=50, views=64))
    assert passes.grad >= 50 and passes.batched_forward + passes.forward >= 64
    assert loaded is models.loaded(model_key) is not None
    assert large == pytest.approx(zerogpu.gpu_pass_times(loaded).seconds(passes))
    duration = zerogpu._long_duration(key, request(steps=50, views=64), {}, 0)
    assert duration == zerogpu.gpu_duration(large) and zerogpu.GPU_MIN_S <= duration <= zerogpu.GPU_MAX_S
    assert zerogpu._long_duration(key, request(attack="no-such-attack"), {}, 0) == zerogpu.GPU_QUICK_S


def _load_in_worker(model_key, allowed, answers) -> None:
    from demo.models import loading
    from demo.pipeline import budget
    from demo.ui import models

    loaded = models.get_model(model_key, allowed)[0]
    budget.pass_times(loaded)
    answers.put(loading.load_image_tower(model_key, loaded.device) is loaded.clip.visual)


def test_a_gpu_worker_loads_models_while_server_threads_hold_the_cache_locks(model_key, allowed, monkeypatch):
    """A GPU worker is forked from a serving thread, and only that thread lives on in it: it must not wait on
    a lock that another thread (pricing a request, building a model) held at the moment of the fork."""
    import multiprocessing
    import threading

    from demo.models import loading
    from demo.pipeline import budget
    from demo.ui import models

    for name in ("_CACHE", "_TOWERS", "_KEY_LOCKS"):  # the model is not built yet: the worker builds it
        monkeypatch.setattr(loading, name, {})
    monkeypatch.setattr(models, "_resolved", {})
    key = (loading.spec_for(model_key).key, str(loading.pick_device()))
    building = loading._KEY_LOCKS.setdefault(key, threading.Lock())
    held, release = threading.Event(), threading.Event()

    def server_thread():
        with loading._CACHE_LOCK, building, models._lock, budget._LOCK:
            held.set()
            release.wait(120)

    holder = threading.Thread(target=server_thread)
    holder.start()
    assert held.wait(10)
    ctx = multiprocessing.get_context("fork")  # as `spaces` starts its workers
    answers = ctx.SimpleQueue()
    worker = ctx.Process(target=_load_in_worker, args=(model_key, allowed, answers), daemon=True)
    try:
        worker.start()
        worker.join(60)
        stalled = worker.is_alive()
    finally:
        if worker.is_alive():
            worker.kill()
        release.set()
        holder.join()
    assert not stalled, "the forked worker waits on a lock held by a thread it does not have"
    assert worker.exitcode == 0 and answers.get() is True


def _parallel_op(answers) -> None:
    x = torch.ones(512, 512)
    answers.put(float(x.triu_().sum()))


def test_a_gpu_worker_computes_after_the_server_computed_on_several_threads():
    """A ZeroGPU server computes on the CPU's threads at startup (preloading, pricing); torch's OpenMP pool
    does not survive the fork, so a worker that kept the parent's thread count would wait forever in its
    first parallel CPU op."""
    import multiprocessing

    import demo.models.loading  # noqa: F401  (registers the child's fork hooks, as the app does)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.ones(512, 512).triu_()  # the parent's OpenMP pool now has threads a child will not have
        ctx = multiprocessing.get_context("fork")
        answers = ctx.SimpleQueue()
        worker = ctx.Process(target=_parallel_op, args=(answers,), daemon=True)
        worker.start()
        worker.join(60)
        stalled = worker.is_alive()
        if stalled:
            worker.kill()
    finally:
        torch.set_num_threads(before)
    assert not stalled, "the forked worker waits for OpenMP threads it does not have"
    assert answers.get() == 512 * 513 / 2


def test_on_zerogpu_no_background_thread_loads_models(model_key, monkeypatch):
    """Off ZeroGPU a thread warms up the twins after startup; on ZeroGPU `models.preload` has done it in the
    main thread, and such a thread would see every model on the CPU and build it again under the cache
    locks while requests fork GPU workers. The page's first cost estimate is there at once (the pass
    costs are estimates), not promised from a measurement in the background."""
    from demo.ui import layout, zerogpu

    started = []
    monkeypatch.setattr(layout, "_warm_up", lambda *args: started.append(args))
    monkeypatch.setattr(zerogpu, "on_zerogpu", lambda: True)
    page = layout.build_demo(model_key)
    texts = [b.value for b in page.blocks.values() if isinstance(getattr(b, "value", None), str)]
    assert any(t.startswith("Cost of **Run all**: about") for t in texts)
    monkeypatch.setattr(zerogpu, "on_zerogpu", lambda: False)
    layout.build_demo(model_key)
    assert len(started) == 1  # only the second build, off ZeroGPU, warms up
