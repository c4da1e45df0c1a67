"""Mixed load test: cheap and heavy requests, cancels and disconnects from concurrent clients.

`python -m demo.bench.load --mixed [--model teaching] [--clients 8] [--minutes 3]`

Launches the app on 127.0.0.1 (nothing else is contacted) and runs, for a bounded time, clients with
different roles: half send cheap requests (a classification, a one-step FGSM attack), two send heavy
adaptive comparisons, one submits heavy comparisons and cancels them after a second, one starts them
over plain HTTP and drops its event stream (as a closed tab does). Every distinct request is first run
alone. Reported: errors (goal 0; cancelled and dropped runs are not errors), results identical to the
request alone (goal all), p95 latency of cheap requests under load (goal <= 2 s), the server's resident
memory growth (goal < 10%). The numbers go to their own section of docs/benchmarks.md and a JSON.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ...eval.publish.markdown import table
from ..writeup import replace_section
from .harness import (EXAMPLES, MAX_GROWTH, free_port, make_client, result_digest, rss_mb, start_server, stop_server,
                     wait_ready)

BEGIN, END = "<!-- mixed load test: begin -->", "<!-- mixed load test: end -->"
CHEAP_P95_S = 2.0
WARMUP_S = 30.0
LABELS = "blue heart\nblue square\nred star\ngreen cross\nyellow circle\npurple moon"
AUTO, NO_TARGET = "(clean prediction)", "(none: untargeted)"
COMPARE_ORDER = ["image", "labels_text", "true_label", "model_key", "attack_name", "eps", "steps", "target", "mode",
                 "seed", "training_time", "test_time", "training_free", "attack_params", "defense_params"]


def requests(model: str) -> dict[str, list[dict]]:
    images = sorted(EXAMPLES.glob("teaching_*.png"))[:3]
    base = {"labels_text": LABELS, "true_label": AUTO, "model_key": model}
    classify = [dict(base, image=str(p), api_name="/classify") for p in images]
    fgsm = [dict(base, image=str(p), attack_name="fgsm", eps=4, steps=1, target=NO_TARGET, seed=i, attack_params="{}",
                 api_name="/attack") for i, p in enumerate(images)]
    heavy = [dict(base, image=str(p), attack_name="pgd", eps=4, steps=10, target=NO_TARGET, mode="adaptive", seed=i,
                  training_time="tecoa", test_time="tpt", training_free="ttc", attack_params="{}",
                  defense_params="{}", api_name="/compare") for i, p in enumerate(images)]
    return {"cheap": classify + fgsm, "heavy": heavy}


def _call(client, request: dict, timeout: float):
    from gradio_client import handle_file

    kwargs = dict(request, image=handle_file(request["image"]))
    api = kwargs.pop("api_name")
    return client.submit(api_name=api, **kwargs).result(timeout=timeout)


def _labels(client, api: str) -> list[str]:
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api]
    return [r.get("label") or r.get("component", "") for r in info["returns"]]


def _drop_stream(url: str, request: dict, after_s: float) -> None:
    """Start a heavy comparison over Gradio's HTTP queue protocol and close the event stream."""
    import httpx

    config = httpx.get(url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "compare")
    with open(request["image"], "rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": f}).json()[0]
    args = dict(request, image={"path": uploaded, "meta": {"_type": "gradio.FileData"}})
    session = uuid.uuid4().hex
    httpx.post(url + "gradio_api/queue/join", json={"data": [args[k] for k in COMPARE_ORDER] + [None],
                                                    "fn_index": fn_index, "session_hash": session,
                                                    "event_data": None, "trigger_id": None})
    start = time.monotonic()
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=60) as s:
        for _ in s.iter_lines():
            if time.monotonic() - start > after_s:
                break


def run(model: str, clients: int, minutes: float, out: Path, startup_timeout: float = 600.0) -> int:
    work = Path(tempfile.mkdtemp(prefix="demo-load-mixed-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_server(model, port, work / "server.log")
    res: dict = {"command": f"python -m demo.bench.load --mixed --model {model} --clients {clients} "
                            f"--minutes {minutes:g}",
                 "date": time.strftime("%Y-%m-%d %H:%M"), "model": model, "clients": clients, "minutes": minutes}
    try:
        res["startup_s"] = wait_ready(url, proc, startup_timeout)
        reqs = requests(model)
        solo = make_client(url, work / "alone")
        labels = {api: _labels(solo, api) for api in ("/classify", "/attack", "/compare")}
        digest = lambda r, out_: result_digest(out_, labels[r["api_name"]])  # noqa: E731
        references = {id(r): digest(r, _call(solo, r, 600)) for kind in reqs.values() for r in kind}
        res["rss_alone_mb"] = rss_mb(proc.pid)
        records, lock = [], threading.Lock()
        phase = {"deadline": time.monotonic() + WARMUP_S, "keep": False}

        def record(**rec):
            if phase["keep"]:
                with lock:
                    records.append(rec)

        def worker(c: int) -> None:
            deadline = phase["deadline"]
            client = make_client(url, work / f"client{c}")
            role = "cheap" if c < max(1, clients // 2) else ("heavy", "heavy", "cancel", "drop")[(c - clients // 2) % 4]
            i = 0
            while time.monotonic() < deadline:
                pool = reqs["cheap" if role == "cheap" else "heavy"]
                r = pool[(c + i) % len(pool)]
                i += 1
                start = time.monotonic()
                try:
                    if role == "cancel":
                        from gradio_client import handle_file

                        kwargs = dict(r, image=handle_file(r["image"]))
                        job = client.submit(api_name=kwargs.pop("api_name"), **kwargs)
                        time.sleep(1.0)
                        job.cancel()
                        record(role=role, cancelled=True)
                    elif role == "drop":
                        _drop_stream(url, r, 1.0)
                        record(role=role, cancelled=True)
                    else:
                        out_ = _call(client, r, max(5.0, deadline - time.monotonic() + 120))
                        record(role=role, latency_s=time.monotonic() - start, identical=digest(r, out_) == references[id(r)])
                except Exception as exc:  # counted and reported, never hidden
                    record(role=role, error=f"{type(exc).__name__}: {str(exc)[:200]}")
                if role in ("cancel", "drop"):
                    time.sleep(2.0)

        def load(seconds: float) -> None:
            phase["deadline"] = time.monotonic() + seconds
            threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(seconds + 300)
            time.sleep(3.0)  # cancelled runs must have stopped; let buffers go

        # A short warm-up of the same load first: the first concurrent runs size the worker threads' memory
        # once; the check is for growth while the load goes on (a leak), measured after it.
        load(WARMUP_S)
        res["rss_before_mb"] = rss_mb(proc.pid)
        phase["keep"] = True
        load(minutes * 60)
        res["rss_after_mb"] = rss_mb(proc.pid)
    finally:
        stop_server(proc)
    done = [r for r in records if "latency_s" in r]
    cheap = sorted(r["latency_s"] for r in done if r["role"] == "cheap")
    res.update({
        "requests": len(records), "errors": [r["error"] for r in records if "error" in r],
        "completed": len(done), "identical": sum(r["identical"] for r in done),
        "cancelled_or_dropped": sum(1 for r in records if r.get("cancelled")),
        "cheap_n": len(cheap), "cheap_median_s": statistics.median(cheap) if cheap else None,
        "cheap_p95_s": cheap[min(len(cheap) - 1, int(0.95 * len(cheap)))] if cheap else None,
        "heavy_median_s": statistics.median([r["latency_s"] for r in done if r["role"] == "heavy"] or [float("nan")]),
        "growth": (res["rss_after_mb"] - res["rss_before_mb"]) / res["rss_before_mb"],
    })
    res["checks"] = {"no_errors": not res["errors"], "identical": res["identical"] == res["completed"],
                     "cheap_p95": res["cheap_p95_s"] is not None and res["cheap_p95_s"] <= CHEAP_P95_S,
                     "memory": res["growth"] < MAX_GROWTH}
    text = section(res)
    replace_section(out, text, BEGIN, END)
    out.with_name("loadtest_mixed.json").write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    print(text)
    return 0 if all(res["checks"].values()) else 1


def section(res: dict) -> str:
    ok = lambda flag: "pass" if flag else "**FAIL**"  # noqa: E731
    c = res["checks"]
    return "\n".join([
        "## Mixed load test", "",
        f"Written by `{res['command']}` on {res['date']}: {res['clients']} clients for {res['minutes']:g} minutes "
        "against the app on 127.0.0.1. Half send cheap requests (`/classify`, a one-step FGSM `/attack`); the "
        "others send adaptive comparisons (PGD-10 through TeCoA, TPT and TTC), cancel them after a second, or "
        "drop the event stream after a second as a closed tab does.", "",
        *table(["measure", "value", "check"], [
            ["requests sent", f"{res['requests']} ({res['completed']} completed, {res['cancelled_or_dropped']} "
             "cancelled or dropped)", ""],
            ["errors", len(res["errors"]), ok(c["no_errors"])],
            ["completed results identical to the request alone", f"{res['identical']} of {res['completed']}",
             ok(c["identical"])],
            ["cheap requests: median / p95 latency under load",
             f"{res['cheap_median_s']:.2f} / {res['cheap_p95_s']:.2f} s ({res['cheap_n']} requests; goal p95 <= "
             f"{CHEAP_P95_S:g} s)", ok(c["cheap_p95"])],
            ["heavy comparisons: median latency", f"{res['heavy_median_s']:.1f} s", ""],
            [f"server memory (RSS) after the solo runs / after a {WARMUP_S:.0f} s warm-up of the same load / after "
             "the load", f"{res['rss_alone_mb']:.0f} / {res['rss_before_mb']:.0f} / {res['rss_after_mb']:.0f} MB "
             f"(growth during the load {100 * res['growth']:+.1f}%; goal < {100 * MAX_GROWTH:.0f}%)", ok(c["memory"])],
        ], align="llc"),
        "",
    ] + ([f"Errors: {'; '.join(res['errors'][:5])}", ""] if res["errors"] else []))
