"""The machine description and the benchmark report (markdown for people, JSON for comparisons)."""
from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
from pathlib import Path

import torch

from ..eval.publish.markdown import table

# The load test (`python -m demo.bench.load`) keeps its numbers between these markers; rewriting the
# benchmark report keeps that section as it is.
LOADTEST_BEGIN, LOADTEST_END = "<!-- load-test:begin -->", "<!-- load-test:end -->"

TARGET_RATIO = 1.15
# Seconds for the full comparison with defaults on 2 CPU cores, by model. Both teaching models serve the same
# classroom page, so the ViT is held to the ResNet's bar.
TARGET_COMPARE_S = {"teaching": 0.5, "teaching-vit": 0.5, "vit-b-32": 5.0, "vit-b-32-random": 5.0,
                    "random:ViT-B-32": 5.0}
TARGET_COLD_S = {"teaching": 15.0, "teaching-vit": 15.0}
TARGET_MEMORY_MB = {"vit-b-32": 3000.0, "vit-b-32-random": 3000.0, "random:ViT-B-32": 3000.0}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available()}
    try:
        info["memory_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _f(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _verdict(value, limit, below: bool = True) -> str:
    if value is None or limit is None:
        return "-"
    return "yes" if (value <= limit if below else value >= limit) else "**no**"


def _why_not(error: str) -> str:
    """A row that did not run: a method this model cannot take (the app refuses it the same way) is not a failure."""
    prefix = "DefenseError: "
    if error.startswith(prefix):
        return f"not available on this model: {error[len(prefix):][:200]}"
    return f"failed: {error[:160]}"


def _params(params: dict) -> str:
    out = []
    for k, v in params.items():
        if isinstance(v, float) and k in ("eps", "alpha", "step_size") and v < 1:
            out.append(f"{k}={v * 255:g}/255")
        else:
            out.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(out) or "-"


def _method_table(rows: list[dict], kind: str) -> list[str]:
    para = ["paradigm"] if kind == "defense" else []
    header = [kind, *para, "default parameters", "runs", "ms / image", "forward / image", "fwd+bwd / image",
              "single forward / fwd+bwd ms alongside", "expected ms", "overhead ratio", f"<= {TARGET_RATIO}"]
    lines = []
    for r in rows:
        first = [r["name"], *([r.get("paradigm", "")] if para else []), _params(r["params"])]
        if r["error"]:
            lines.append(first + [_why_not(r["error"])] + [""] * 7)
            continue
        ref = r.get("reference")
        alongside = f"{_f(ref['forward_ms'])} / {_f(ref['grad_ms'])}" if ref else "-"
        lines.append(first + [len(r["samples_ms_per_image"]), _f(r["ms_per_image"]), _f(r["forward"], 2),
                              _f(r["grad"], 2), alongside, _f(r["expected_ms"]), _f(r["ratio"], 2),
                              _verdict(r["ratio"], TARGET_RATIO)])
    return table(header, lines, align="l" * (len(para) + 2) + "r" * 7 + "c")


def _section(res: dict) -> list[str]:
    s = res["single_pass"]
    lines = [f"### {res['model']} on {res['device']}", "",
             f"Model `{res['model_key']}`, {res['labels']} labels, batch of {res['batch']} image(s) "
             f"({', '.join(res['images'])}), at least {res['repeats']} timed run(s) per method after {res['warmup']} "
             f"warm-up run(s), more until its runs add up to {_f(res.get('min_seconds', 0.0))} s (runs column), "
             f"loaded in {_f(res['load_s'], 2)} s.", ""]
    if res["notes"]:
        lines += ["Stand-ins: " + "; ".join(res["notes"]) + ".", ""]
    lines += [f"Single passes (same run, same batch; median of {s['samples']}): "
              f"forward **{_f(s['forward_ms'], 2)} ms** per image, "
              f"forward+backward **{_f(s['grad_ms'], 2)} ms** per image "
              f"(ratio {_f(s['grad_ms'] / s['forward_ms'] if s['forward_ms'] else None, 2)}).", ""]
    lines += ["**Attacks**", ""] + _method_table(res["attacks"], "attack") + [""]
    lines += ["**Defenses** (each on the PGD adversarial images, as in the app)", ""]
    lines += _method_table(res["defenses"], "defense") + [""]
    c = res.get("comparison")
    if c:
        if c.get("error"):
            lines += [f"**Full comparison** failed: {c['error']}", ""]
        else:
            target = TARGET_COMPARE_S.get(res["model"]) if res["device"] == "cpu" else None
            defs = ", ".join(f"{p}: {n}" + (f" ({_params(c['defense_params'][n])})" if c.get("defense_params", {}).get(n)
                                             else "") for p, n in c["defenses"].items())
            defs += f"; image tower in {c.get('precision', 'fp32')}"
            lines += [f"**Full comparison** (clean + {c['attack']} {_params(c['attack_params'])} + {defs}; "
                      f"{c['labels']} labels, {c['image']}) through `{c['route']}`: median **{c['ms'] / 1000:.3f} s** "
                      f"over {len(c['samples_ms'])} run(s)"
                      + (f"; target <= {target} s: {_verdict(c['ms'] / 1000, target)}" if target else "") + ".", "",
                      *table(["stage (library, one run)", "ms", "forward / image", "fwd+bwd / image"],
                             [[st["stage"], _f(st["ms"]), _f(st["forward"], 2), _f(st["grad"], 2)]
                              for st in c["stages"]]
                             + [["library total", _f(sum(st["ms"] for st in c["stages"])), "", ""]], align="lrrr"),
                      ""]
    if res.get("levers"):
        lines += ["**Speed levers** (the same comparison under each setting; median of the handler's wall time, "
                  "and the library stages of one run; predictions: clean, attacked, then one per paradigm)", ""]
        rows = []
        for lv in res["levers"]:
            stage = {st["stage"].split(":")[0]: st["ms"] for st in lv["stages"]}
            rows.append([lv["precision"], lv["views"], f"{lv['ms'] / 1000:.2f}", f"{lv['library_ms'] / 1000:.2f}",
                         _f(stage.get("attack")), _f(stage.get("test-time")), ", ".join(lv.get("predictions") or [])])
        lines += table(["image tower", "test-time views", "comparison s", "library s", "attack ms", "test-time ms",
                        "predictions"], rows, align="lrrrrrl") + [""]
    return lines


def _probe_table(entries: list[dict], header: list[str], align: str, targets: dict, cells) -> list[str]:
    """A row per probe: `cells(entry, target)` where it ran (target None off the CPU or where the model has
    none), the reason where it failed."""
    rows = []
    for e in entries:
        if e.get("error"):
            rows.append([e["model"], e["device"], f"failed: {e['error'][:160]}"] + [""] * (len(header) - 3))
            continue
        rows.append(cells(e, targets.get(e["model"]) if e["device"] == "cpu" else None))
    return table(header, rows, align)


def _cold_cells(c: dict, target) -> list:
    return ([c["model"], c["device"]]
            + [_f(c[k], 2) for k in ("import_torch_s", "ready_s", "first_prediction_s", "model_load_s",
                                     "process_wall_s")]
            + [_verdict(c["ready_s"], target) if target else "-"])


def _memory_cells(m: dict, target) -> list:
    gpu = f" (GPU allocated {_f(m['cuda_max_allocated_mb'], 0)} MB)" if "cuda_max_allocated_mb" in m else ""
    return [m["model"], m["device"] + gpu, ", ".join(m["models_loaded"]), _f(m["before_models_mb"], 0),
            _f(m["loaded_mb"], 0), _f(m.get("resident_loaded_mb"), 0), _f(m["after_comparison_mb"], 0),
            _verdict(m["after_comparison_mb"], target) if target else "-"]


def _probes(results: dict) -> list[str]:
    lines = []
    cold = results.get("cold_start", [])
    if cold:
        lines += ["## Cold start", "",
                  "A fresh interpreter imports `app` with the model as the startup model (page built, model "
                  "loaded), then classifies one example. Seconds from the first line of the process.", ""]
        lines += _probe_table(cold, ["model", "device", "import torch", "import app (ready)", "first prediction",
                                     "model load", "process wall", "<= target"], "llrrrrrc", TARGET_COLD_S,
                              _cold_cells) + [""]
    mem = results.get("memory", [])
    if mem:
        lines += ["## Peak memory", "",
                  "Peak resident memory (high-water mark) of a fresh process that loads the model and its two robust twins (TeCoA, FARE), "
                  "then runs one full comparison with defaults. The twins are kept as image towers only, as the "
                  "training-time defenses load them. Resident: memory in use once loading is done; the peak "
                  "includes the temporary copy of a checkpoint while it is read.", ""]
        lines += _probe_table(mem, ["model", "device", "models loaded", "before loading (MB)",
                                    "peak, 3 models loaded (MB)", "resident, 3 models loaded (MB)",
                                    "peak after a comparison (MB)", "<= target"], "lllrrrrc", TARGET_MEMORY_MB,
                              _memory_cells)
        notes = sorted({n for m in mem for n in m.get("notes", [])})
        lines += ([""] + [f"- {n}" for n in notes] if notes else []) + [""]
    return lines


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Benchmarks", "",
             f"Written by `{results['command']}` on {results['date']}. Ratios, not absolute times, are what "
             "to compare between machines.", ""]
    for u in results.get("updates", []):
        lines += [f"Section {u['sections']} rewritten by `{u['command']}` on {u['date']} (torch with "
                  f"{u['machine']['torch_threads']} threads).", ""]
    lines += ["## Machine", "",
               f"- CPU: {m['cpu']} ({m['usable_cores']} usable of {m['cpu_count']} cores), "
               f"memory {_f(m.get('memory_gb'), 1)} GB",
               f"- torch {m['torch']} with {m['torch_threads']} threads, Python {m['python']}, {m['platform']}",
               f"- GPU: {m.get('gpu', 'none')}", "",
               "## Cost of each attack and defense", "",
               "ms / image: median wall time of a call on the batch, divided by the batch size. Passes: image-encoder "
               "passes per image counted by the library (forward = without gradient, fwd+bwd = with gradient and a "
               "backward). Single passes alongside: one forward and one forward+backward on the same batch, timed "
               "right before each timed run of the method (median per image), so that the machine's drift during "
               "a long run cancels out. expected ms = forward x single forward ms + fwd+bwd x single "
               "forward+backward ms, both from those alongside (medians). overhead ratio: the median over the "
               "timed runs of each run's ms / the expected ms of the single passes timed just before it. "
               f"Target: overhead ratio <= {TARGET_RATIO}. Work outside the image encoder (text "
               "tower passes of prompt tuning, augmentation, wrappers) shows up as a ratio above 1.", ""]
    for res in results["runs"]:
        lines += (_section(res) if not res.get("error") else
                  [f"### {res['model']} on {res['device']}", "", f"Not measured: {res['error']}", ""])
    lines += _probes(results)
    return "\n".join(lines).rstrip() + "\n"


_SECTION = re.compile(r"<!-- ([\w -]+?): ?begin -->.*?<!-- \1: ?end -->", re.S)


def write(results: dict, out: Path) -> tuple[Path, Path]:
    """Write the markdown report (keeping the marked sections of other commands) and the JSON next to it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    if out.is_file():
        # Sections other commands wrote (load tests, sweeps) between their markers survive a new run.
        kept = [m.group(0) for m in _SECTION.finditer(out.read_text(encoding="utf-8"))]
        if kept:
            text += "\n" + "\n\n".join(kept) + "\n"
    out.write_text(text, encoding="utf-8")
    js = out.with_suffix(".json")
    js.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return out, js


def replace_loadtest_section(out: Path, section: str) -> None:
    """Put the load-test section (markdown) into the report, replacing an earlier one."""
    replace_section(out, section, LOADTEST_BEGIN, LOADTEST_END)


def replace_section(out: Path, section: str, begin: str, end: str) -> None:
    """Put a section (markdown) between the markers `begin` and `end` into the report, replacing an earlier one."""
    block = f"{begin}\n{section.strip()}\n{end}"
    old = out.read_text(encoding="utf-8") if out.is_file() else "# Benchmarks\n"
    pattern = re.escape(begin) + ".*?" + re.escape(end)
    new = re.sub(pattern, lambda _: block, old, flags=re.S) if re.search(pattern, old, re.S) else \
        old.rstrip() + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(new, encoding="utf-8")


def loadtest_section(res: dict, server_log: list[str] | None = None) -> str:
    """The load test's markdown section (numbers from `python -m demo.bench.load`), or why it did not finish."""
    if res.get("error"):
        return (f"## Load test\n\nWritten by `{res['command']}` on {res['date']}: **did not complete**: "
                f"{res['error']}\n\nServer log (last lines):\n\n"
                + "\n".join(f"    {t}" for t in server_log or []) + "\n")
    lat = [r for r in res["latencies_s"] if r is not None]
    checks = res["checks"]
    ok = lambda flag: "pass" if flag else "**FAIL**"  # noqa: E731
    lines = ["## Load test", "",
             f"Written by `{res['command']}` on {res['date']}: the app on 127.0.0.1 with model `{res['model']}` "
             f"({res['device']}), {res['clients']} concurrent `gradio_client` clients x {res['rounds']} full "
             f"comparisons on `/compare` (page defaults, defenses {', '.join(res['defenses'])}), "
             f"{res['distinct']} distinct requests (example image and seed), each also run alone first.", "",
             *table(["measure", "value", "check"], [
                 ["server ready after", f"{res['startup_s']:.1f} s", ""],
                 ["requests alone: median latency", f"{statistics.median(res['alone_s']):.2f} s", ""],
                 ["concurrent run: wall time", f"{res['wall_s']:.1f} s for {res['total']} comparisons "
                  f"({60 * res['total'] / res['wall_s']:.1f} per minute)", ""],
                 ["latency under load: median / p95 / max",
                  f"{statistics.median(lat):.2f} / {_p95(lat):.2f} / {max(lat):.2f} s" if lat else "-", ""],
                 ["errors", f"{res['errors']} of {res['total']}", ok(checks["no_errors"])],
                 ["results identical to the request run alone", f"{res['identical']} of {res['total']}",
                  ok(checks["identical"])],
                 ["server RSS: at start / before / after the concurrent run",
                  f"{res['rss_start_mb']:.0f} / {res['rss_before_mb']:.0f} / {res['rss_after_mb']:.0f} MB "
                  f"(growth {100 * res['growth']:+.1f}%)", ok(checks["memory"])],
                 ["clients told their queue position while waiting",
                  f"{res['queued_with_position']} of {res['queued']} queued requests; largest position "
                  f"{res['max_rank']} (0 = next in line), largest queue {res['max_queue_size']}",
                  ok(checks["queue_position"])]], align="llc")]
    if res.get("failures"):
        lines += ["", "Failures (first 5):", ""] + [f"- {f}" for f in res["failures"][:5]]
    return "\n".join(lines) + "\n"


def _p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
