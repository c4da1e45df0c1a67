"""The merged output of a sweep, built from its results folder alone: `leaderboard.md` and
`leaderboard.json` (the ranked table of `demo.eval.publish.tables.leaderboard` per model, every cell's
numbers, what is missing or failed, the sweep command), and `by_name/<model>/<run>.json`, the cells under
their published run names, a folder `demo.eval.publish.published` and `demo.eval.publish.tables.write_all`
read as they read docs/results/.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..eval.metrics import fmt_ci
from ..eval.publish import markdown as md, published as P, tables as T
from ..eval.publish.report import attack_label
from .store import Store, write_json, write_text

MANIFEST = "sweep.json"
# The leaderboard's "attacks counted" column names the runs by the published protocol; a sweep with other
# iteration counts says its own.
PROTOCOL_STEPS = {"pgd": 10, "aa": 100}


def load(out: str | Path) -> tuple[dict, list[tuple[dict, dict | None]], dict[str, dict]]:
    """(manifest, [(cell entry, stored record or None)], {key: failure record}) of the last sweep in `out`.

    Raises:
        FileNotFoundError: `out` holds no sweep.
    """
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out} holds no sweep ({MANIFEST} is missing)")
    manifest = json.loads(path.read_text())
    store = Store(out)
    finished, failures = store.finished(), store.failures()
    cells = [(c, json.loads(finished[c["key"]].read_text()) if c["key"] in finished else None)
             for c in manifest["cells"]]
    fails = {k: json.loads(p.read_text()) for k, p in failures.items()}
    return manifest, cells, fails


def published_views(cells: list[tuple[dict, dict | None]]) -> dict[str, dict[str, dict]]:
    """{model: {published run name: result}}; where an adaptive and an oblivious cell share a run name
    the adaptive one is kept (it also holds the oblivious numbers)."""
    views: dict[str, dict[str, dict]] = {}
    for entry, result in sorted((cr for cr in cells if cr[1] is not None and cr[0].get("run")),
                                key=lambda cr: not cr[1].get("adaptive")):
        views.setdefault(entry["model"], {}).setdefault(entry["run"], result)
    return views


def _relabel(numbers: dict, view: dict[str, dict]) -> None:
    steps = {}
    for run, result in view.items():
        prefix = run.split("_")[0]
        steps.setdefault(prefix, result["attack"]["params"].get("steps"))
    for d in numbers.values():
        if "leaderboard_attacks" not in d:
            continue
        labels = []
        for a in d["leaderboard_attacks"]:
            s, kind = steps.get(a), a.rstrip("0123456789")
            if s is not None and s != PROTOCOL_STEPS.get(kind):
                labels.append(f"{'PGD' if kind == 'pgd' else 'AutoAttack'}, {s} steps (oblivious, adaptive)")
            else:
                labels.append(a)
        d["leaderboard_attacks"] = labels


def cell_rows(cells: list[tuple[dict, dict | None]]) -> list[dict]:
    """One row per (finished cell, defense), the undefended model first."""
    rows = []
    for entry, r in cells:
        if r is None:
            continue
        n, u = r["data"]["n"], r["undefended"]
        base = {"cell": entry["name"], "model": entry["model"], "attack": attack_label(r), "data": r["data"]["source"],
                "mode": "adaptive" if r.get("adaptive") else "oblivious", "n": n, "seconds": r["seconds"]}
        rows.append({**base, "defense": "undefended", "clean": u["clean_accuracy"], "oblivious": u["robust_accuracy"],
                     "adaptive": u["robust_accuracy"] if r.get("adaptive") else None, "worst": u["robust_accuracy"]})
        for d in r["defenses"]:
            if "error" in d:
                rows.append({**base, "defense": d["name"], "error": d["error"]})
                continue
            rows.append({**base, "defense": d["name"], "clean": d["clean_accuracy"],
                         "oblivious": d["robust_accuracy_oblivious"], "adaptive": d.get("robust_accuracy_adaptive"),
                         "worst": d.get("robust_accuracy_worst", d["robust_accuracy_oblivious"])})
    return rows


def _rows_table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        cells = [r["cell"], r["defense"], r["attack"], r["data"]]
        if "error" in r:
            lines.append(cells + [f"not run: {r['error']}", "", "", "", ""])
            continue
        lines.append(cells + [fmt_ci(r[k], r["n"]) for k in ("clean", "oblivious", "adaptive", "worst")]
                     + [f"{r['seconds']:.0f}"])
    return md.text(["cell", "defense", "attack", "data", "clean", "oblivious", "adaptive", "worst case", "cell s"],
                 lines, align="llllllllr")


def merge(out: str | Path) -> dict:
    """Write leaderboard.md, leaderboard.json and by_name/ in `out` from its stored cells; returns the JSON."""
    out = Path(out)
    manifest, cells, fails = load(out)
    views = published_views(cells)
    numbers = {}
    for model, view in views.items():
        numbers[model] = P.defense_numbers(view)
        _relabel(numbers[model], view)
        for run, result in view.items():
            write_json(out / "by_name" / model / f"{run}.json", result)
    rows = cell_rows(cells)
    missing = [c["name"] for c, r in cells if r is None and c["key"] not in fails]
    failed = [{"name": c["name"], "error": fails[c["key"]]["error"], "command": fails[c["key"]]["command"]}
              for c, r in cells if r is None and c["key"] in fails]
    done = sum(r is not None for _, r in cells)
    seconds = sum(r["seconds"] for _, r in cells if r is not None)
    summary = {"command": manifest["command"], "merged": time.strftime("%Y-%m-%d %H:%M:%S"),
               "grid": manifest.get("grid"), "cells": len(cells), "done": done, "failed": failed, "missing": missing,
               "cell_seconds": seconds, "leaderboard": numbers, "rows": rows,
               "files": {c["name"]: f"cells/{c['name']}.{c['key']}.json" for c, r in cells if r is not None}}
    write_json(out / "leaderboard.json", summary)
    write_text(out / "leaderboard.md", markdown(summary, manifest))
    return summary


def markdown(summary: dict, manifest: dict) -> str:
    parts = [f"# Sweep leaderboard\n\nProduced by `{summary['command']}`; merged {summary['merged']} from "
             f"{summary['done']} of {summary['cells']} cells ({summary['cell_seconds']:.0f} s of evaluation, "
             f"{manifest.get('threads', 1)} thread(s) per cell, device {manifest.get('device', 'cpu')}). Each cell is "
             "one `python -m demo.eval` run; its command is in its file under `cells/`.\n"]
    if summary["failed"] or summary["missing"]:
        parts.append("**Incomplete.** " + (f"Failed: {', '.join(f['name'] for f in summary['failed'])} "
                     "(errors in leaderboard.json and `failed/`). " if summary["failed"] else "")
                     + (f"Not run yet: {', '.join(summary['missing'])}. " if summary["missing"] else "")
                     + "Rerunning the same command runs only these.\n")
    for model, numbers in summary["leaderboard"].items():
        if any("leaderboard_worst" in d for d in numbers.values()):
            parts += [f"## {model}: ranked by worst-case robust accuracy\n",
                      "Per-image worst case over every adaptive cell at 4/255 on the seen classes, as in "
                      "docs/leaderboard.md; ≈ marks a rank whose 95% interval overlaps the one above.\n",
                      T.leaderboard(numbers)]
    parts += ["## Every cell\n", _rows_table(summary["rows"]) if summary["rows"] else "No cell has finished yet.\n"]
    return "\n".join(parts)
