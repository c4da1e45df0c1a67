"""One benchmark run: every requested model on every requested device, then the subprocess probes."""
from __future__ import annotations

import datetime
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..attacks import ATTACKS
from ..defenses import DEFENSES
from ..models.loading import load_image_tower, load_model, pick_device
from ..models.zoo import ZOO
from . import measure, probes
from .stand_ins import checkpoint_id, ensure_apt_prompt, ensure_visual_prompts, prepare
from .writeup import machine, write

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("teaching", "teaching-vit", "vit-b-32-random")


@dataclass
class Config:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    devices: list[str] = field(default_factory=lambda: available_devices())
    repeats: int = 3
    min_seconds: float = 2.0  # per method: cheap methods repeat until their runs add up to this
    warmup: int = 1
    batch: int = 1
    compare_repeats: int = 3
    attacks: list[str] | None = None      # None: every registered attack
    defenses: list[str] | None = None     # None: every registered defense
    compare_defenses: dict[str, str] = field(default_factory=measure.default_comparison_defenses)
    compare: bool = True
    levers: bool = False
    probes: bool = True
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "demo-bench")
    out: Path = Path("docs/benchmarks.md")
    command: str = "python -m demo.bench"
    update: bool = False  # rewrite only the measured models' sections of an existing report


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _handler_importable() -> str | None:
    """None when the app's handler module imports (without starting a server), else why not."""
    try:
        import importlib

        importlib.import_module("demo.ui.handlers")
        return None
    except Exception as exc:  # the UI may be mid-change; the library route still measures the same work
        return f"{type(exc).__name__}: {exc}"


def run_model(model_id: str, device: str, cfg: Config) -> dict:
    """Measure one model on one device; a model that cannot be loaded gives a row saying why."""
    res: dict = {"model": model_id, "device": device}
    try:
        key, notes = prepare(model_id, cfg.workdir)
        start = time.perf_counter()
        loaded = load_model(key, device)
        res["load_s"] = time.perf_counter() - start
        for which in ("tecoa", "fare"):  # twins load once, before any timing, as in a warm app
            try:
                load_image_tower(ZOO[key].twins[which], device)
            except Exception as exc:
                notes.append(f"{which} twin not loaded ({exc})")
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        return res
    clf, images, y, paths = measure.workload(loaded, cfg.batch)
    try:
        note = ensure_apt_prompt(clf, cfg.workdir)
        notes += [note] if note else []
    except Exception as exc:
        notes.append(f"no APT prompt ({exc})")
    try:
        notes += ensure_visual_prompts(clf, cfg.workdir)
    except Exception as exc:
        notes.append(f"no TAPT or FAP stand-in prompts ({exc})")
    res.update(model_key=key, labels=clf.num_classes, batch=cfg.batch, images=[p.name for p in paths],
               repeats=cfg.repeats, min_seconds=cfg.min_seconds, warmup=cfg.warmup, notes=notes)
    attacks = cfg.attacks if cfg.attacks is not None else ATTACKS.names()
    defenses = cfg.defenses if cfg.defenses is not None else DEFENSES.names()

    log.info("%s on %s: single passes, %d attacks", model_id, device, len(attacks))
    # Single passes are cheap next to the methods: more samples make the denominator steady.
    single_repeats = max(5, 2 * cfg.repeats)
    first = measure.single_pass(clf, images, y, single_repeats, cfg.warmup)
    res["attacks"] = measure.bench_attacks(clf, images, y, attacks, cfg.repeats, cfg.warmup, cfg.seed,
                                             cfg.min_seconds)
    # Defenses see what they see in the app: the PGD image.
    adv = ATTACKS.create("pgd")(clf, images, y, seed=cfg.seed).adv_images
    log.info("%s on %s: %d defenses", model_id, device, len(defenses))
    res["defenses"] = measure.bench_defenses(clf, adv, y, defenses, cfg.repeats, cfg.warmup, cfg.seed,
                                               cfg.min_seconds)
    last = measure.single_pass(clf, images, y, single_repeats, cfg.warmup)
    res["single_pass"] = measure.combine_single(first, last)
    measure.add_ratios(res["attacks"], res["single_pass"])
    measure.add_ratios(res["defenses"], res["single_pass"])

    if cfg.compare:
        log.info("%s on %s: full comparison", model_id, device)
        why_not = _handler_importable() if torch.device(device) == pick_device() else "another device than the app's"
        try:
            res["comparison"] = measure.bench_comparison(loaded, paths[0], cfg.compare_defenses, cfg.compare_repeats,
                                                         cfg.warmup, via_handler=why_not is None, seed=cfg.seed)
            if why_not:
                res["comparison"]["route"] += f" (handler not used: {why_not})"
        except Exception as exc:
            res["comparison"] = {"error": f"{type(exc).__name__}: {exc}"}
        if cfg.levers:
            log.info("%s on %s: the comparison under each speed lever", model_id, device)
            res["levers"] = measure.bench_levers(loaded, paths[0], cfg.compare_defenses, cfg.compare_repeats,
                                                 cfg.warmup, via_handler=why_not is None, seed=cfg.seed)
    return res


def run(cfg: Config) -> dict:
    results = {"command": cfg.command, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
               "machine": machine(), "runs": [], "cold_start": [], "memory": []}
    for device in cfg.devices:
        for model_id in cfg.models:
            results["runs"].append(run_model(model_id, device, cfg))
    if cfg.probes:
        for device in cfg.devices:
            for model_id in cfg.models:
                log.info("%s on %s: cold start and peak memory", model_id, device)
                try:
                    cold = probes.cold_start(checkpoint_id(model_id, cfg.workdir), device)
                except Exception as exc:
                    cold = {"error": f"{type(exc).__name__}: {exc}"}
                mem = probes.peak_memory(model_id, cfg.workdir, device)
                for entry, probe in ((cold, results["cold_start"]), (mem, results["memory"])):
                    entry["loaded_on"] = entry.get("device")
                    entry.update(model=model_id, device=device)
                    probe.append(entry)
    if cfg.update:
        results = merged(results, cfg.out.with_suffix(".json"))
    write(results, cfg.out)
    return results


def merged(results: dict, previous: Path) -> dict:
    """The previous report's results with the runs of `results` in place of the same model's and device's,
    noted as an update (a slow section can be rewritten without measuring all the others again)."""
    old = json.loads(previous.read_text(encoding="utf-8"))
    new = {(r["model"], r["device"]): r for r in results["runs"]}
    old["runs"] = [new.pop((r["model"], r["device"]), r) for r in old["runs"]] + list(new.values())
    sections = ", ".join(f"{m} on {d}" for m, d in ((r["model"], r["device"]) for r in results["runs"]))
    old.setdefault("updates", []).append({"command": results["command"], "date": results["date"],
                                          "sections": sections, "machine": results["machine"]})
    return old
