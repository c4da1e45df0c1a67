"""Load test: concurrent API clients running full comparisons against the app launched on this machine.

`python -m demo.loadtest [--model teaching] [--clients 8] [--rounds 5] [--out docs/benchmarks.md]`
(`--mixed`: cheap and heavy requests, cancels and disconnects; see demo/loadmix.py)

Launches `app.py` on 127.0.0.1 (a free port; nothing else is contacted), runs each distinct request once
alone for reference, then `clients` concurrent `gradio_client` clients each run `rounds` full
comparisons on the /compare endpoint (page defaults: PGD-10 at 4/255, oblivious; one defense per
paradigm). Checks: no request fails; every result equals the same request run alone (same seed; images
compared pixel by pixel, the results JSON without its timings); the server's resident memory grows by
less than 10% over the concurrent run; waiting clients are told their queue position. The numbers go to
their own section of the benchmark report and to a JSON next to it. The whole run is bounded by
--timeout; the server is stopped in every case. Exit status 0 only when every check passes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from .bench.models import checkpoint_id
from .bench.report import loadtest_section, replace_loadtest_section

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
MAX_GROWTH = 0.10
# Outputs that carry wall-clock times ("Time per stage" chart and table) differ between any two runs;
# they are left out of the identity check.
TIMED_OUTPUT_PREFIX = "time"
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".gif", ".bmp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(model: str, port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, **ENV)
    log = open(log_path, "w")
    # A session of its own, so that stopping the server also stops anything it started.
    return subprocess.Popen([sys.executable, "app.py", "--model", model, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: never through a proxy
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with status {proc.returncode} before it was ready")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app was not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ------------------------------------------------------------------------------------ fingerprints

def _strip_times(value):
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if k != "ms"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _file_digest(path: Path) -> str:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            return "pixels:" + hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()
    if path.suffix.lower() == ".json":
        data = _strip_times(json.loads(path.read_text(encoding="utf-8")))
        return "json:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return "bytes:" + hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(value):
    """A value with every downloaded file replaced by a digest of its content (pixels, JSON minus times)."""
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if isinstance(value, str) and len(value) < 4096 and os.path.isabs(value) and os.path.isfile(value):
        return _file_digest(Path(value))
    return value


def result_digest(outputs, labels: list[str]) -> dict[str, object]:
    return {f"{i}:{label}": fingerprint(v) for i, (label, v) in enumerate(zip(labels, outputs))
            if not str(label).lower().startswith(TIMED_OUTPUT_PREFIX)}


# ----------------------------------------------------------------------------------------- clients

def requests_for(model: str, n: int, defenses: list[str]) -> list[dict]:
    """n distinct requests: example images of the model's world and different seeds."""
    kind = "teaching" if model.startswith("teaching") else "photo"
    images = sorted(EXAMPLES.glob(f"{kind}_*.png"))
    return [{"image": str(images[i % len(images)]), "seed": i, "training_time": defenses[0],
             "test_time": defenses[1], "training_free": defenses[2]} for i in range(n)]


def run_one(client, request: dict, deadline: float, poll_s: float = 0.05) -> dict:
    from gradio_client import handle_file
    from gradio_client.utils import Status

    kwargs = dict(request, image=handle_file(request["image"]))
    start = time.monotonic()
    job = client.submit(api_name="/compare", **kwargs)
    positions, sizes, queued = [], [], False
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel()
            return {"error": "deadline reached", "latency_s": time.monotonic() - start}
        status = job.status()
        if status.code == Status.IN_QUEUE:
            queued = True
            if status.rank is not None:
                positions.append(status.rank)
            if status.queue_size is not None:
                sizes.append(status.queue_size)
        time.sleep(poll_s)
    out = {"latency_s": time.monotonic() - start, "queued": queued, "ranks": sorted(set(positions)),
           "max_queue_size": max(sizes) if sizes else None}
    try:
        out["outputs"] = job.result(timeout=max(1.0, deadline - time.monotonic()))
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def make_client(url: str, downloads: Path):
    from gradio_client import Client

    # A slow machine can take longer than the client's default 5 s to answer; the run's deadline bounds it all.
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads),
                  httpx_kwargs={"timeout": 600.0})


def concurrent_phase(url: str, requests: list[dict], clients: int, rounds: int, deadline: float,
                     downloads: Path) -> list[dict]:
    records: list[dict] = []
    lock = threading.Lock()
    ready = [make_client(url, downloads / f"client{c}") for c in range(clients)]
    barrier = threading.Barrier(clients)

    def user(c: int) -> None:
        barrier.wait()  # every client starts at once, so that some of them have to wait in the queue
        for r in range(rounds):
            index = (c + r) % len(requests)
            try:
                rec = run_one(ready[c], requests[index], deadline)
            except Exception as exc:
                rec = {"error": f"{type(exc).__name__}: {exc}", "latency_s": None}
            rec.update(client=c, round=r, request=index)
            with lock:
                records.append(rec)

    threads = [threading.Thread(target=user, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 30)
    return records


# ------------------------------------------------------------------------------------------ checks

def evaluate(records: list[dict], references: dict[int, dict], labels: list[str]) -> dict:
    errors = [r for r in records if r.get("error")]
    failures = [f"client {r['client']} round {r['round']}: {r['error']}" for r in errors]
    identical = 0
    for r in records:
        if r.get("error"):
            continue
        got = result_digest(r["outputs"], labels)
        if got == references[r["request"]]:
            identical += 1
        else:
            diff = [k for k in got if got[k] != references[r["request"]].get(k)]
            failures.append(f"client {r['client']} round {r['round']}: differs from the request alone in {diff}")
    queued = [r for r in records if r.get("queued")]
    ranks = [x for r in queued for x in r["ranks"]]
    sizes = [r["max_queue_size"] for r in queued if r.get("max_queue_size") is not None]
    return {"errors": len(errors), "identical": identical, "failures": failures, "queued": len(queued),
            "queued_with_position": sum(1 for r in queued if r["ranks"]), "max_rank": max(ranks, default=None),
            "max_queue_size": max(sizes, default=None), "latencies_s": [r.get("latency_s") for r in records]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="teaching",
                   help="the app's startup model: any id the app takes, or vit-b-32-random (default: %(default)s)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5, help="comparisons per client (default: %(default)s)")
    p.add_argument("--defenses", default="tecoa,tpt,ttc",
                   help="training-time,test-time,training-free defenses (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="bound on the whole run in seconds (default: %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--mixed", action="store_true",
                   help="mixed workload instead: cheap and heavy requests, cancels and disconnects (demo/loadmix.py)")
    p.add_argument("--minutes", type=float, default=3.0, help="with --mixed: how long the load runs")
    a = p.parse_args(argv)
    if a.mixed:
        from .loadmix import run

        return run(a.model, a.clients, a.minutes, a.out, a.startup_timeout)
    defenses = [s.strip() for s in a.defenses.split(",")]
    if len(defenses) != 3:
        p.error("--defenses takes three names: training-time,test-time,training-free")
    os.environ.update(ENV)
    deadline = time.monotonic() + a.timeout
    work = Path(tempfile.mkdtemp(prefix="demo-loadtest-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    # Random-weight ids (vit-b-32-random, random:ARCH) become a checkpoint file the app can load; the app
    # has no robust twins for them, so pick defenses that need none (e.g. --defenses none,tpt,ttc).
    proc = start_server(checkpoint_id(a.model, Path(tempfile.gettempdir()) / "demo-bench"), port, work / "server.log")
    res = {"command": "python -m demo.loadtest " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d %H:%M"), "model": a.model, "clients": a.clients, "rounds": a.rounds,
           "defenses": defenses, "total": a.clients * a.rounds, "distinct": a.clients}
    try:
        records, references, labels = _measure(a, res, proc, url, work, defenses, deadline)
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        text = loadtest_section(res, (work / "server.log").read_text(errors="replace").strip().splitlines()[-5:])
        replace_loadtest_section(a.out, text)
        print(text)
        return 2
    finally:
        stop_server(proc)
    res.update(evaluate(records, references, labels))
    res["reference_digests"] = references  # what "identical" compared, per distinct request
    res["total"] = a.clients * a.rounds
    res["errors"] += res["total"] - len(records)  # a client that never reported counts as failed
    res["growth"] = (res["rss_after_mb"] - res["rss_before_mb"]) / res["rss_before_mb"]
    res["device"] = _device()
    res["checks"] = {"no_errors": res["errors"] == 0, "identical": res["identical"] == res["total"],
                     "memory": res["growth"] < MAX_GROWTH,
                     "queue_position": res["queued"] > 0 and res["queued_with_position"] == res["queued"]
                     and (res["max_rank"] or 0) >= 1}
    text = loadtest_section(res)
    replace_loadtest_section(a.out, text)
    a.out.with_name("loadtest.json").write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    print(text)
    return 0 if all(res["checks"].values()) else 1


def _measure(a, res: dict, proc, url: str, work: Path, defenses: list[str], deadline: float):
    """Reference runs alone, then the concurrent phase; fills `res` with times and memory."""
    res["startup_s"] = wait_ready(url, proc, min(a.startup_timeout, a.timeout))
    res["rss_start_mb"] = rss_mb(proc.pid)
    requests = requests_for(a.model, a.clients, defenses)
    solo = make_client(url, work / "alone")
    info = solo.view_api(print_info=False, return_format="dict")["named_endpoints"]["/compare"]
    labels = [r.get("label") or r.get("component", "") for r in info["returns"]]
    references, res["alone_s"] = {}, []
    for i, request in enumerate(requests):
        rec = run_one(solo, request, deadline)
        if rec.get("error"):
            raise RuntimeError(f"request {i} failed when run alone: {rec['error']}")
        references[i] = result_digest(rec["outputs"], labels)
        res["alone_s"].append(rec["latency_s"])
    res["rss_before_mb"] = rss_mb(proc.pid)
    start = time.monotonic()
    records = concurrent_phase(url, requests, a.clients, a.rounds, deadline, work)
    res["wall_s"] = time.monotonic() - start
    time.sleep(2.0)  # let the server finish releasing per-request buffers
    res["rss_after_mb"] = rss_mb(proc.pid)
    return records, references, labels


def _device() -> str:
    import torch  # the app runs on the GPU whenever one is visible (see pick_device)

    return f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"


if __name__ == "__main__":
    sys.exit(main())
