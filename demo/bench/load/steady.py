"""The steady load test: concurrent clients each running full comparisons, checked against each request alone.

Runs each distinct request once alone for reference, then `clients` concurrent `gradio_client` clients
each run `rounds` full comparisons on the /compare endpoint (page defaults: PGD-10 at 4/255, oblivious;
one defense per paradigm). Checks: no request fails; every result equals the same request run alone
(same seed; images compared pixel by pixel, the results JSON without its timings); the server's resident
memory grows by less than 10% over the concurrent run; waiting clients are told their queue position.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

from ..stand_ins import checkpoint_id
from ..writeup import loadtest_section, replace_loadtest_section
from .harness import (ENV, EXAMPLES, MAX_GROWTH, free_port, make_client, result_digest, rss_mb, start_server,
                     stop_server, wait_ready)


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


def run(model: str, clients: int, rounds: int, defenses: list[str], out: Path, command: str,
        timeout: float = 1800.0, startup_timeout: float = 600.0) -> int:
    """The whole test, bounded by `timeout` seconds; the server is stopped in every case.

    The numbers go to their own section of the benchmark report `out` and to loadtest.json next to it.
    Returns 0 when every check passes, 1 when one fails, 2 when the run did not complete."""
    os.environ.update(ENV)
    deadline = time.monotonic() + timeout
    work = Path(tempfile.mkdtemp(prefix="demo-load-steady-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    # Random-weight ids (vit-b-32-random, random:ARCH) become a checkpoint file the app can load; the app
    # has no robust twins for them, so pick defenses that need none (e.g. --defenses none,tpt,ttc).
    proc = start_server(checkpoint_id(model, Path(tempfile.gettempdir()) / "demo-bench"), port, work / "server.log")
    res = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "model": model, "clients": clients,
           "rounds": rounds, "defenses": defenses, "total": clients * rounds, "distinct": clients}
    try:
        records, references, labels = _measure(res, proc, url, work, defenses, deadline,
                                               min(startup_timeout, timeout))
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        text = loadtest_section(res, (work / "server.log").read_text(errors="replace").strip().splitlines()[-5:])
        replace_loadtest_section(out, text)
        print(text)
        return 2
    finally:
        stop_server(proc)
    res.update(evaluate(records, references, labels))
    res["reference_digests"] = references  # what "identical" compared, per distinct request
    res["total"] = clients * rounds
    res["errors"] += res["total"] - len(records)  # a client that never reported counts as failed
    res["growth"] = (res["rss_after_mb"] - res["rss_before_mb"]) / res["rss_before_mb"]
    res["device"] = _device()
    res["checks"] = {"no_errors": res["errors"] == 0, "identical": res["identical"] == res["total"],
                     "memory": res["growth"] < MAX_GROWTH,
                     "queue_position": res["queued"] > 0 and res["queued_with_position"] == res["queued"]
                     and (res["max_rank"] or 0) >= 1}
    text = loadtest_section(res)
    replace_loadtest_section(out, text)
    out.with_name("loadtest.json").write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    print(text)
    return 0 if all(res["checks"].values()) else 1


def _measure(res: dict, proc, url: str, work: Path, defenses: list[str], deadline: float, startup_timeout: float):
    """Reference runs alone, then the concurrent phase; fills `res` with times and memory."""
    res["startup_s"] = wait_ready(url, proc, startup_timeout)
    res["rss_start_mb"] = rss_mb(proc.pid)
    requests = requests_for(res["model"], res["clients"], defenses)
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
    records = concurrent_phase(url, requests, res["clients"], res["rounds"], deadline, work)
    res["wall_s"] = time.monotonic() - start
    time.sleep(2.0)  # let the server finish releasing per-request buffers
    res["rss_after_mb"] = rss_mb(proc.pid)
    return records, references, labels


def _device() -> str:
    import torch  # the app runs on the GPU whenever one is visible (see pick_device)

    return f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"

