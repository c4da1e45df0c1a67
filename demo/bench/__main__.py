"""`python -m demo.bench`: see the package docstring."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from . import __doc__ as DOC
from .collect import DEFAULT_MODELS, Config, available_devices, run


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def parse(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m demo.bench", description=DOC.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated model ids: zoo keys, local-dir:/path, ARCH=/file, random:ARCH, "
                        "vit-b-32-random (default: %(default)s)")
    p.add_argument("--devices", default="auto", help="cpu, cuda, or both comma-separated (default: every one present)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="per method: repeat past --repeats until the timed runs add up to this many seconds "
                        "(default: %(default)s; 0 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed runs before each measurement (default: 1; 0 with --quick)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default: %(default)s, as in the app)")
    p.add_argument("--attacks", help="comma-separated attacks (default: every registered one)")
    p.add_argument("--defenses", help="comma-separated defenses (default: every registered one)")
    p.add_argument("--compare-defenses", help="training-time,test-time,training-free defense of the full comparison "
                                              "(default: the page's preselected ones, demo.pipeline.DEFAULT_DEFENSES)")
    p.add_argument("--no-compare", action="store_true", help="skip the full comparison")
    p.add_argument("--levers", action="store_true",
                   help="also time the comparison under each speed lever (fp32/bf16 image tower, 64 views or the "
                        "page's start)")
    p.add_argument("--no-probes", action="store_true", help="skip cold start and peak memory (subprocesses)")
    p.add_argument("--quick", action="store_true",
                   help="tiny budget for tests (rough numbers): 1 timed run, no warm-up unless --warmup, batch 1")
    p.add_argument("--workdir", type=Path, help="where random checkpoints and stand-in prompts are kept")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown report; JSON goes next to it")
    p.add_argument("--update", action="store_true",
                   help="rewrite only these models' sections of the existing report (its JSON), keeping the others")
    a = p.parse_args(argv)
    cfg = Config(models=_names(a.models), repeats=a.repeats, warmup=1 if a.warmup is None else a.warmup, batch=a.batch,
                 min_seconds=a.min_seconds, compare_repeats=a.repeats, attacks=_names(a.attacks),
                 defenses=_names(a.defenses),
                 compare=not a.no_compare, levers=a.levers, probes=not a.no_probes, out=a.out,
                 update=a.update, command="python -m demo.bench " + shlex.join(sys.argv[1:] if argv is None else argv))
    cfg.devices = available_devices() if a.devices == "auto" else _names(a.devices)
    if a.quick:
        cfg.repeats = cfg.compare_repeats = cfg.batch = 1
        cfg.min_seconds = 0.0
        cfg.warmup = 0 if a.warmup is None else a.warmup
    if a.compare_defenses:
        names = _names(a.compare_defenses)
        if len(names) != 3:
            p.error("--compare-defenses takes three names: training-time,test-time,training-free")
        cfg.compare_defenses = dict(zip(("training-time", "test-time", "training-free"), names))
    if a.workdir:
        cfg.workdir = a.workdir
    return cfg


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("demo.bench").setLevel(logging.INFO)  # progress lines; the libraries stay quiet
    cfg = parse(argv)
    results = run(cfg)
    print(f"wrote {cfg.out} and {cfg.out.with_suffix('.json')}")
    return results


if __name__ == "__main__":
    main()
