"""What an unfinished AutoAttack run already shows about a † row of the leaderboard.

A sharded AutoAttack run is published (and takes the row's † away) only when every shard is done. Until
then the row is ranked by PGD-10, an upper bound, while its finished shards may already show that the
stronger attack finds fewer robust images. This module reads the leading finished shards of each
incomplete run (the first k images, in order), scores them per image together with PGD-10 on the same k
images, and says both numbers next to the table. Nothing here enters the published numbers or the ranking.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..assemble import merge
from ..metrics import fmt_ci
from ..runs import RESULTS_DIR, SHARD_SIZE, progress, shards
from . import published as P

SPLIT_WORDS = {"seen": "seen", "held_out": "held-out"}


def leading_shards(run: str, folder: Path = RESULTS_DIR) -> list[dict]:
    """The finished shards of `run` from its first image up to the first one missing."""
    out = []
    for s in shards(run, folder):
        if not s.path.is_file():
            break
        out.append(json.loads(s.path.read_text()))
    return out


def interim(results: dict[str, dict], folder: Path = RESULTS_DIR) -> list[dict]:
    """One entry per defense and split with an incomplete AutoAttack run at 4/255 whose first shards are
    done: the share of those k images that survive every attack (PGD-10 and AutoAttack, per image), and the
    share that survive PGD-10 alone on the same k images. `results` are the published runs of one model."""
    tables = P.rows(results)
    out = []
    for run in SHARD_SIZE:
        m = P._RUN.match(run)
        if not m or m["attack"] != "aa" or m["eps"] != "4" or run in results:
            continue
        done = leading_shards(run, folder)
        if not done:
            continue
        pgd = tables.get(("pgd", 4, m["split"]), {})
        partial = P.rows({run: merge(done)}).get(("aa", 4, m["split"]), {})
        for name, row in partial.items():
            if name == "none" or name not in pgd:
                continue
            before = [pgd[name]] + pgd[name].get("also", [])
            k = min(row["n"], min(len(e["labels"]) for e in before))
            both, _ = P.per_image_worst(before + [row], k)
            alone, _ = P.per_image_worst(before, k)
            out.append({"name": name, "title": row["title"], "split": m["split"], "run": run, "n": k,
                        "total": progress(run, folder)[1], "worst": both, "pgd_worst": alone,
                        "wall": shard_wall(done)})
    return out


def text(entries: list[dict]) -> str:
    """The paragraph under the leaderboard ('' when no AutoAttack run is under way)."""
    if not entries:
        return ""
    lines = []
    for e in entries:
        lines.append(f"- {e['title']}, {SPLIT_WORDS[e['split']]} images: AutoAttack has run on the first {e['n']} "
                     f"of {e['total']} (`{e['run']}`, {e['wall']} so far). {fmt_ci(e['worst'], e['n'])} "
                     f"of them survive every attack, where PGD-10 alone leaves {fmt_ci(e['pgd_worst'], e['n'])} "
                     f"of the same {e['n']}.")
    return ("**AutoAttack runs under way.** What their finished image shards show so far (not ranked by: each "
            "row keeps its published number, and a † row its †, until the run is complete):\n\n"
            + "\n".join(lines) + "\n")


def shard_wall(shards: list[dict]) -> str:
    """The wall time of image shards in words, CPU and GPU shards apart ('40 s in 4 image shards')."""
    gpu = [s for s in shards if s["device"] != "cpu"]
    cpu = [s for s in shards if s["device"] == "cpu"]
    if not gpu or not cpu:
        where = " on a GPU" if gpu else ""
        return f"{sum(s['seconds'] for s in shards):.0f} s in {len(shards)} image shards{where}"
    return (f"{len(shards)} image shards: {sum(s['seconds'] for s in cpu):.0f} s for {len(cpu)} on the CPU, "
            f"{sum(s['seconds'] for s in gpu):.0f} s for {len(gpu)} on a GPU")
