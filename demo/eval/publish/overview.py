"""`python -m demo.eval.summary RESULTS.json ...`: one table of every defense from several evaluation runs.

Evaluations are split into runs so they can share the cores; each run's JSON (from `python -m demo.eval
--out`) keeps its own defenses. This prints them as one markdown table, in the order given, with the
undefended row once, and checks that the runs agree on the setting (model, data, attack, n).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..metrics import fmt_ci
from . import markdown as md
from .report import _num, _passes, attack_label

ADAPTIVE_HOW = {
    "none": "the same attack",
    "training-time": "attack on the robust model itself",
}


def how_attacked(row: dict) -> str:
    """How the adaptive attack went through this defense, in a few words."""
    if row["name"] == "none" or row["paradigm"] == "training-time":
        return ADAPTIVE_HOW.get(row["name"], ADAPTIVE_HOW["training-time"])
    parts = ["exact gradient" if row["differentiable"] else "BPDA"]
    if row["randomized"]:
        parts.append("EOT")
    if row["paradigm"] == "test-time":
        parts = ["BPDA through the adaptation (prompt held constant)", "fresh views per step"]
    return ", ".join(parts)


def summary(results: list[dict], sources: list[str]) -> str:
    first = results[0]
    key = lambda r: (r["model"]["key"], r["data"]["source"], r["data"]["n"], attack_label(r))  # noqa: E731
    for r, src in zip(results, sources):
        if key(r) != key(first):
            raise SystemExit(f"{src} was run on a different setting: {key(r)} vs {key(first)}")
    n = first["data"]["n"]
    lines, seen = [], set()
    for r in results:
        for row in r["defenses"]:
            if row["name"] in seen or "error" in row:
                continue
            seen.add(row["name"])
            flag = " ⚠" if row.get("adaptive_weaker_than_oblivious") else ""
            worst = row.get("robust_accuracy_worst")
            lines.append([row["title"], row["paradigm"], fmt_ci(row["clean_accuracy"], n),
                          fmt_ci(row["robust_accuracy_oblivious"], n),
                          fmt_ci(row.get("robust_accuracy_adaptive"), n) + flag,
                          fmt_ci(worst, n) if worst is not None else "not recorded", how_attacked(row),
                          f"{_num(row['ms_per_image'])} / {_passes(row['passes_per_image'])}"])
    return md.text(["defense", "paradigm", "clean", "oblivious", "adaptive", "worst case", "adaptive attack",
                    "ms / passes per image"], lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m demo.eval.summary", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="JSON files written by python -m demo.eval --out")
    args = p.parse_args(argv)
    results = [json.loads(Path(f).read_text()) for f in args.results]
    text = summary(results, args.results)
    sys.stdout.write(text)
    return text


if __name__ == "__main__":
    main()
