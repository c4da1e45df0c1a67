"""docs/results.md and docs/leaderboard.md, generated from the published runs (`published`).

Every number in them is read from docs/results/*.json; the prose between the tables is written around
those numbers, so a rerun that changes them changes the text too. `python -m demo.eval.suite report`.
"""
from __future__ import annotations

from pathlib import Path

from ..metrics import fmt_ci, paired_verdict, significantly_above, wilson_interval
from . import interim, markdown as md, prose, published as P
from .interim import shard_wall
from .report import attack_label
from .overview import how_attacked

DOCS = P.RESULTS_DIR.parent
PARADIGMS = ("none", "training-time", "test-time", "training-free")
# Adaptive attacks known to be incomplete, said in the tables (not only in the prose).
INCOMPLETE = {
    "tpt": "the adaptation is BPDA (prompt held constant in the backward pass): an upper bound",
    "rtpt": "the adaptation is BPDA (prompt held constant in the backward pass): an upper bound",
    "anti_adversary": "the label it trusts flips during the attack, so the gradient misleads: trust the worst case",
    "stack": "its R-TPT part is crossed by BPDA (prompt held constant in the backward pass): an upper bound",
}


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ordered(table: dict[str, dict]) -> list[dict]:
    return sorted(table.values(), key=lambda r: (PARADIGMS.index(r["paradigm"]) if r["paradigm"] in PARADIGMS else 9))


def _how(row: dict) -> str:
    if row["name"] == "none":
        return "the same attack"
    text = how_attacked(row)
    if row.get("eot_draws"):
        text += f" ({row['eot_draws']} draw{'s' if row['eot_draws'] != 1 else ''} per step)"
    if row.get("adaptive_variants"):
        text += "; also " + ", ".join(f"{k} ({pct(v['robust_accuracy'])})" for k, v in row["adaptive_variants"].items())
    if row["name"] in INCOMPLETE:
        text += "; incomplete: " + INCOMPLETE[row["name"]]
    return text


def pgd_table(table: dict[str, dict]) -> str:
    rows = []
    for r in _ordered(table):
        n, flag = r["n"], " ⚠" if r.get("adaptive_weaker_than_oblivious") else ""
        rows.append([r["title"], r["paradigm"], fmt_ci(r["clean_accuracy"], n),
                     fmt_ci(r["robust_accuracy_oblivious"], n), fmt_ci(r.get("robust_accuracy_adaptive"), n) + flag,
                     fmt_ci(r.get("robust_accuracy_worst"), n), _how(r), f"{r.get('ms_per_image', 0):.1f}"])
    return md.text(["defense", "paradigm", "clean", "oblivious", "adaptive", "worst case",
                    "how the adaptive attack went", "defense ms/image"], rows)


def aa_table(tables: dict) -> str:
    aa = {eps: tables.get(("aa", eps, "seen"), {}) for eps in (1, 4)}
    pgd = tables.get(("pgd", 4, "seen"), {})
    names = [r["name"] for r in _ordered(aa[4] or aa[1])]
    rows = []
    for name in names:
        a1, a4, p = aa[1].get(name), aa[4].get(name), pgd.get(name)
        ref = a4 or a1
        rows.append([ref["title"], fmt_ci(ref["clean_accuracy"], ref["n"]),
                     fmt_ci(a1["robust_accuracy_worst"], a1["n"]) if a1 else "not run",
                     fmt_ci(a4["robust_accuracy_worst"], a4["n"]) if a4 else "not run",
                     fmt_ci(p["robust_accuracy_worst"], p["n"]) if p else "not run",
                     fmt_ci(a4["robust_accuracy_oblivious"], a4["n"]) if a4 and name != "none" else "-"])
    return md.text(["model", "clean", "AutoAttack 1/255", "AutoAttack 4/255", "PGD-10 4/255 (n=500)",
                    "AutoAttack 4/255 transferred from the undefended model"], rows)


def eot_table(results: dict) -> str:
    rows = {}
    for name, r in results.items():
        if name.startswith("eot_"):
            _, defense, draws = name.split("_", 2)
            row = r["defenses"][0]
            rows.setdefault(int(draws), {})[defense] = (row, r["data"]["n"])
    if not rows:
        return "Not run yet.\n"
    defenses = sorted({d for v in rows.values() for d in v})
    titles = {d: next(v[d][0]["title"] for v in rows.values() if d in v) for d in defenses}
    lines = []
    for draws in sorted(rows):
        cells = [draws]
        for d in defenses:
            row, n = rows[draws].get(d, (None, 0))
            cells += [fmt_ci(row["robust_accuracy_adaptive"], n), fmt_ci(row["robust_accuracy_worst"], n)] if row else ["-", "-"]
        lines.append(cells)
    header = ["EOT draws per step"] + [f"{titles[d]}: {what}" for d in defenses for what in ("adaptive", "worst case")]
    return md.text(header, lines)


def saturation(results: dict, defense: str, default: int) -> str:
    """In words: how the adaptive accuracy moves with the draws, and whether the published rows' number
    of draws (`default`) is within noise of the lowest accuracy reached."""
    pts = sorted((int(k.rsplit("_", 1)[1]), r["defenses"][0]["robust_accuracy_adaptive"], r["data"]["n"])
                 for k, r in results.items() if k.startswith(f"eot_{defense}_"))
    if len(pts) < 2:
        return "not measured"
    lowest = min(pts, key=lambda p: p[1])
    trend = " → ".join(f"{pct(a)} ({d})" for d, a, _ in pts)
    at_default = next((p for p in pts if p[0] == default), None)
    if at_default is None:
        verdict = f"the published rows' {default} draws were not measured here"
    elif significantly_above(at_default[1], lowest[1], at_default[2]):
        verdict = (f"the published rows' {default} draws are above the lowest beyond noise: their adaptive number "
                   f"is optimistic")
    else:
        gap = 100 * (at_default[1] - lowest[1])
        draws = f"{default} draw{'s' if default != 1 else ''}"
        verdict = f"the published rows' {draws} {'are' if default != 1 else 'is'} within noise of the lowest ({gap:.1f} points above it)"
        if gap > 0 and len(pts) >= 3:
            verdict += "; the trend still falls slowly, so more draws may lower it a little further"
        elif gap > 0:
            verdict += "; with two points measured, whether more draws keep lowering it is not known"
    return f"adaptive accuracy by draws {trend}; lowest {pct(lowest[1])} at {lowest[0]} draws; {verdict}"


def tpt_eot(numbers: dict) -> str:
    """Why TPT has no EOT-draws measurement, when its numbers say so: its adaptive accuracy is already
    within noise of the undefended model's, so more draws have nothing left to lower."""
    t, u = numbers.get("tpt", {}).get("seen"), numbers.get("none", {}).get("seen")
    if not t or not u or t.get("adaptive") is None:
        return "not measured"
    if significantly_above(t["adaptive"], u["worst"], t["n"]):
        return (f"not measured; its adaptive accuracy ({pct(t['adaptive'])}) is above the undefended model's "
                f"({pct(u['worst'])}) beyond noise, so more draws might lower it")
    return (f"not measured: one draw already brings it to {pct(t['adaptive'])}, within noise of the undefended "
            f"model's {pct(u['worst'])}, so more draws have nothing left to lower")


def sanity_table(results: dict) -> str:
    s = results.get("sanity")
    if not s:
        return "Not run yet.\n"
    from ..sanity import markdown

    failed = [c for c in s["checks"] if not c["passed"]]
    verdict = "All checks passed." if not failed else f"{len(failed)} check(s) FAILED: " + "; ".join(
        f"{c['check']} ({c['model']})" for c in failed)
    return markdown(s) + f"\n{verdict} `{s['command']}`, {s['seconds']:.0f} s.\n"


ATTACK_WORDS = {"pgd4": "PGD-10 (oblivious, adaptive)", "aa4": "AutoAttack (oblivious, adaptive)"}


def _attacks(d: dict) -> str:
    words = [ATTACK_WORDS.get(a, a) for a in d["leaderboard_attacks"] if a != "rand"]
    if "leaderboard_protocol" in d:
        p = d["leaderboard_protocol"]
        strong = " and EOT-APGD at the flat count" if p.get("strong") else ""
        words.append(f"protocol for randomized defenses (EOT up to {p['eot_draws']} draw{'s' if p['eot_draws'] > 1 else ''}{strong}, each image scored on "
                     f"{p['score_draws']} draws; first {p['n']} images; without it {pct(p['without'][0])}, "
                     f"n={p['without'][1]})")
    return " + ".join(words)


def tied_with_above(above: dict | None, row: dict) -> bool:
    """McNemar's exact test (5%) on the images both rows were attacked on: the data cannot order them."""
    if above is None or "leaderboard_survivors" not in above or "leaderboard_survivors" not in row:
        return False
    (l1, ok1), (l2, ok2) = above["leaderboard_survivors"], row["leaderboard_survivors"]
    n = min(len(l1), len(l2))
    if n == 0 or l1[:n] != l2[:n]:
        return not (wilson_interval(above["leaderboard_worst"], above["leaderboard_n"])[0]
                    > wilson_interval(row["leaderboard_worst"], row["leaderboard_n"])[1])
    return paired_verdict(ok1[:n], ok2[:n]) == "no better than"


def leaderboard(numbers: dict[str, dict]) -> str:
    ranked = sorted((d for d in numbers.values() if "leaderboard_worst" in d), key=lambda d: -d["leaderboard_worst"])
    lines, prev = [], None
    for i, d in enumerate(ranked, start=1):
        n, w = d["leaderboard_n"], d["leaderboard_worst"]
        held = d.get("held_out", {})
        dagger = "" if "aa4" in d["leaderboard_attacks"] else " †"
        held_worst = d.get("leaderboard_held_out_worst", held.get("worst"))
        held_n = f" (n={d['leaderboard_held_out_n']})" if "leaderboard_held_out_n" in d else ""
        lines.append([f"{i}{' ≈' if tied_with_above(prev, d) else ''}", d["title"], d["paradigm"],
                      f"{fmt_ci(w, n)}, n={n}{dagger}", _attacks(d),
                      pct(d.get("seen", {}).get("clean")), pct(held.get("clean")), f"{pct(held_worst)}{held_n}",
                      f"{d.get('seen', {}).get('ms') or 0:.1f}"])
        prev = d
    return md.text(["rank", "defense", "paradigm", "worst-case robust acc. (seen, 4/255)", "attacks counted",
                    "clean (seen)", "clean (held-out)", "worst case (held-out)", "defense ms/image"], lines)


def _commands(tables_runs: list[dict]) -> str:
    def wall(r: dict) -> str:
        return shard_wall(r["shards"]) if r.get("shards") else f"{r['seconds']:.0f} s"

    return "\n".join(f"- `{r['command']}` ({wall(r)})" for r in tables_runs) + "\n"


def aa_eot_text(tables: dict) -> str:
    """AutoAttack at several EOT draw counts on the same randomized defense: each count's worst case, and
    which one the leaderboard publishes (both count per image)."""
    lines = []
    for name, row in tables.get(("aa", 4, "seen"), {}).items():
        runs = [row] + row.get("also", [])
        if len(runs) < 2 or not row.get("randomized"):
            continue
        points = sorted((r.get("eot_draws") or 0, r["robust_accuracy_worst"], r["n"]) for r in runs)
        both, n = P.per_image_worst(runs)
        lines.append(f"{row['title']} under AutoAttack: " + ", ".join(f"{fmt_ci(a, n)} at {d} draws" for d, a, n in points)
                     + f"; the lower, {pct(row['robust_accuracy_worst'])}, is published, and the leaderboard counts "
                       f"an image only if it survives both: {fmt_ci(both, n)} of the {n} images do."
                     + (" That is below either run because each run's images meet fresh random draws of the defense "
                        "when they are scored, so two runs give the attacker two tries at an unlucky draw; for a "
                        "randomized defense this is what the worst case over attacks measures."
                        if both < min(a for _, a, _ in points) else ""))
    return ("\n\n".join(lines) + "\n") if lines else ""


def _runs_of(results: dict, prefix: str) -> list[dict]:
    def order(k: str):  # EOT runs by their number of draws
        tail = k.rsplit("_", 1)[-1]
        return (k.rsplit("_", 1)[0], int(tail) if tail.isdigit() else 0, k)

    return [results[k] for k in sorted(results, key=order) if k.startswith(prefix)]


def _split_runs(results: dict, split: str) -> list[dict]:
    return [r for k, r in results.items() if k.startswith("pgd4_") and k.endswith("_" + split)]


def write_all(folder: Path | None = None, docs: Path | None = None) -> list[Path]:
    """Write results.md and leaderboard.md into `docs` (default docs/) from the runs in `folder`."""
    from .. import architectures

    everything = P.load() if folder is None else P.load(folder)
    results = architectures.model_results(everything, "teaching")
    tables, numbers = P.rows(results), P.defense_numbers(results)
    out = []
    seen, held = tables.get(("pgd", 4, "seen"), {}), tables.get(("pgd", 4, "held_out"), {})
    any_pgd = next(iter(_runs_of(results, "pgd4_")), None)
    parts = [prose.INTRO.format(attack=attack_label(any_pgd) if any_pgd else "PGD-10")]
    parts += ["## PGD-10 at 4/255, seen classes\n", pgd_table(seen) if seen else "Not run yet.\n",
              "Commands (wall time, 1 thread, two runs sharing 2 cores):\n", _commands(_split_runs(results, "seen")),
              "## PGD-10 at 4/255, held-out classes (zero-shot)\n", prose.HELD_OUT,
              pgd_table(held) if held else "Not run yet.\n",
              "Commands:\n", _commands(_split_runs(results, "held_out")),
              "## AutoAttack at 1/255 and 4/255\n", prose.AUTOATTACK.format(rows=prose.aa_rows_text(numbers)),
              aa_table(tables), "Commands:\n", _commands(_runs_of(results, "aa")),
              "## EOT draws: when more draws stop helping the attack\n", prose.EOT, eot_table(results),
              f"\nRandom resize & pad: {saturation(results, 'rrp', 4)}.\n\nTTC: {saturation(results, 'ttc', 2)}.\n\n"
              f"R-TPT: {saturation(results, 'rtpt', 1)}.\n\nTPT: {tpt_eot(numbers)}.\n\n",
              aa_eot_text(tables),
              "Commands:\n", _commands(_runs_of(results, "eot_")),
              "## Sanity checks (Carlini et al., 2019)\n", sanity_table(results),
              "## What this shows\n", prose.what_this_shows(numbers),
              "## ResNet and ViT teaching models side by side\n", architectures.INTRO,
              architectures.side_by_side(everything), architectures.probe_section(everything)]
    from .lessons import section as lessons_section  # noise vs PGD, transfer, stacked defenses

    parts.append(lessons_section(everything))
    from . import protocol_tables
    from ..runs import SHARD_SIZE, missing, progress

    where = P.RESULTS_DIR if folder is None else Path(folder)
    parts.append(protocol_tables.results_section(where))
    absent = missing(where)
    if absent:
        def state(a: str) -> str:
            if a not in SHARD_SIZE:
                return f"`{a}`"
            done, total = progress(a, where)
            return f"`{a}` ({done} of {total} images done)"

        parts.append("## Not in this report yet\n\nThese runs of `python -m demo.eval.suite list` have no results "
                     "yet (`python -m demo.eval.suite run` computes them, resuming from the image shards already "
                     "done): " + ", ".join(state(a) for a in absent) + ".\n")
    docs = DOCS if docs is None else Path(docs)
    path = docs / "results.md"
    path.write_text("\n".join(parts))
    out.append(path)
    board = docs / "leaderboard.md"
    under_way = interim.text(interim.interim(results, where))
    under_way += "\n" if under_way else ""
    board.write_text(prose.leaderboard_intro(numbers) + "\n" + leaderboard(numbers) + "\n" + under_way
                     + prose.LEADERBOARD_NOTES + "\n" + protocol_tables.leaderboard_text(where)
                     + "\n## The same rows on the ViT teaching model\n\n" + architectures.INTRO + "\n"
                     + architectures.side_by_side(everything))
    out.append(board)
    return out
