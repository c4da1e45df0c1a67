"""Measurements that need a fresh interpreter: cold start of the app and peak memory.

Each probe runs in a fresh `python -c` subprocess (see `_ENTRY`) and prints one JSON line; the
parent keeps its own clock as well. Peak memory is the subprocess's own high-water mark (`VmHWM` in
/proc/self/status on Linux), so nothing the benchmark itself loaded counts. `ru_maxrss` is only the
fallback: Linux carries it over from the parent through fork and exec, so a benchmark that already
holds a large model would see its own size reported for every probe.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}


# The clock starts before anything of the project is imported.
_ENTRY = ("import time; t0 = time.perf_counter(); import sys; from demo.bench.probes import main; "
          "main(sys.argv[1:], t0)")


def _env(device: str) -> dict:
    env = dict(os.environ, **ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the app picks the GPU when it sees one
    return env


def _run(args: list[str], device: str, timeout: float) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _ENTRY, *args], cwd=ROOT, env=_env(device),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    out = json.loads(lines[-1])
    out["process_wall_s"] = wall
    return out


def cold_start(model_id: str, device: str = "cpu", timeout: float = 600.0) -> dict:
    """Import the app module with `model_id` as the startup model (page built, model loaded), then
    answer one classification. Times from the first line of the subprocess, after interpreter start."""
    return _run(["cold", model_id], device, timeout)


def peak_memory(model_id: str, workdir: Path, device: str = "cpu", timeout: float = 900.0) -> dict:
    """Peak RSS with the model and its two robust twins loaded, then after one full comparison."""
    return _run(["memory", model_id, str(workdir)], device, timeout)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def _cold(model_id: str, t0: float) -> dict:
    os.environ["DEMO_MODEL"] = model_id
    import torch  # noqa: F401  (timed on its own: most of an import is the tensor library)

    t_torch = time.perf_counter()
    import app  # noqa: F401  builds the page and loads the startup model, as a Space does

    t_ready = time.perf_counter()
    from demo.bench.measure import app_defaults
    from demo.models.loading import load_model
    from demo.pipeline import to_model_input

    loaded = load_model(model_id)  # cached by the app's start-up
    labels, paths = app_defaults(loaded)
    clf = loaded.classifier(labels)
    with torch.no_grad():
        clf(to_model_input(loaded, paths[0]))
    t_first = time.perf_counter()
    return {"import_torch_s": t_torch - t0, "ready_s": t_ready - t0, "first_prediction_s": t_first - t0,
            "model_load_s": loaded.load_seconds, "device": str(loaded.device), "maxrss_mb": _maxrss_mb()}


def _memory(model_id: str, workdir: str) -> dict:
    import torch

    from demo.bench.measure import app_defaults, default_comparison_defenses
    from demo.bench.stand_ins import ensure_apt_prompt, prepare
    from demo.defenses.base import Paradigm
    from demo.models.loading import load_image_tower, load_model
    from demo.models.zoo import ZOO
    from demo.pipeline import run_comparison, to_model_input

    base_rss = _maxrss_mb()
    key, notes = prepare(model_id, Path(workdir))
    loaded = load_model(key)
    twins = [ZOO[key].twins[w] for w in ("tecoa", "fare")]
    for twin in twins:  # as the training-time defenses load them: image tower only
        load_image_tower(twin, loaded.device)
    loaded_rss = _maxrss_mb()
    resident = _status_mb("VmRSS")  # what stays once loading's temporary copies are gone
    labels, paths = app_defaults(loaded)
    note = ensure_apt_prompt(loaded.classifier(labels), Path(workdir))
    defenses = {Paradigm(p): (n, {}) for p, n in default_comparison_defenses().items()}
    run_comparison(loaded, to_model_input(loaded, paths[0]), labels, None, "pgd", {}, None, defenses, False, 0)
    out = {"models_loaded": [loaded.key] + twins, "before_models_mb": base_rss,
           "loaded_mb": loaded_rss, "resident_loaded_mb": resident, "after_comparison_mb": _maxrss_mb(),
           "device": str(loaded.device),
           "notes": notes + ([note] if note else [])}
    if loaded.device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(loaded.device) / 2**20
    return out


def main(argv: list[str], t0: float | None = None) -> None:
    t0 = time.perf_counter() if t0 is None else t0
    kind, model_id, *rest = argv
    result = _cold(model_id, t0) if kind == "cold" else _memory(model_id, *rest)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
