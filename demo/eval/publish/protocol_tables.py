"""The tables of the protocol for randomized defenses (`demo.eval.randomized`), for docs/results.md and
docs/leaderboard.md: the EOT curve per row, R-TPT decomposed, TAPT's starting prompts, and per randomized
row the draws the attack reached and the draws each image was scored on.

Every number is read from docs/results/rand_*.json, or, for a run still under way, from its finished
shards, with how far it got beside the number. Two counts of the curve, or two rows on the same images,
are compared by McNemar's exact test on "right on every draw" (`metrics.paired_verdict`), not by whether
their intervals overlap.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .. import randomized
from ..metrics import fmt_ci, mcnemar_exact, paired_verdict, wilson_interval
from ..runs import RUNS, SHARD_SIZE, progress, shard_results
from . import markdown as md
from .protocol_prose import PROSE, LEADERBOARD_PROSE, DECOMPOSITION_PROSE, TAPT_PROSE, PAIRED_PROSE
from .published import RESULTS_DIR

_NAME = re.compile(r"^rand_(?P<group>[a-z_]+?)_eot(?P<k>\d+)_(?P<split>seen|held_out)$")
TITLES = {"rrp": "Random resize & pad", "rtpt": "R-TPT (robust test-time prompt tuning)",
          "ttc": "TTC (test-time counterattacks)", "tpt": "TPT (test-time prompt tuning)",
          "tapt": "TAPT (test-time adversarial prompt tuning)",
          "rrp_apgd": "Random resize & pad, strong attack", "rtpt_apgd": "R-TPT, strong attack"}


def load(folder: Path = RESULTS_DIR) -> dict[str, dict]:
    """Every protocol run with a result: the merged file, else its finished shards merged (then
    "done"/"total" say how far it got)."""
    out = {}
    for name, command in RUNS.items():
        if "demo.eval.randomized" not in command:
            continue
        path = folder / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
            continue
        if name not in SHARD_SIZE:
            continue
        parts = shard_results(name, folder)
        starts = sorted(p["data"]["start"] for p in parts)
        lead = [p for p in parts if p["data"]["start"] in _leading(starts, parts)]
        if lead:
            done, total = progress(name, folder)
            out[name] = {**randomized.merge(lead, command), "done": len(_flat(lead)), "total": total}
    return out


def _leading(starts: list[int], parts: list[dict]) -> set[int]:
    """The shard starts that continue from image 0 without a gap (a partial run is its first k images)."""
    by_start = {p["data"]["start"]: p["data"]["n"] for p in parts}
    keep, at = set(), 0
    while at in by_start:
        keep.add(at)
        at += by_start[at]
    return keep


def _flat(parts: list[dict]) -> list:
    return [label for p in parts for label in p["labels"]]


def _all_right(res: dict, kind: str) -> list[bool]:
    return [r == res["score_draws"] for r in res[f"{kind}_right"]]


def _state(res: dict) -> str:
    return f" ({res['done']} of {res['total']} images so far)" if "total" in res else ""


MODELS = {"": "ResNet", "vit_": "ViT"}  # run-name prefix -> the teaching model it ran on


def curve(runs: dict[str, dict], group: str, split: str = "seen", prefix: str = "") -> list[tuple[int, dict]]:
    pts = []
    for name, res in runs.items():
        if prefix != next((p for p in MODELS if p and name.startswith(p)), ""):
            continue
        m = _NAME.match(name[len(prefix):])
        if m and m["group"] == group and m["split"] == split and res.get("adaptive_right"):
            pts.append((int(m["k"]), res))
    return sorted(pts, key=lambda p: p[0])


def _compare(a: dict, b: dict) -> tuple[int, float, float, int, int, float]:
    """(images, share of a right on every draw, of b, only a, only b, McNemar p) on the images both scored."""
    n = min(len(a["labels"]), len(b["labels"]))
    ra, rb = _all_right(a, "adaptive")[:n], _all_right(b, "adaptive")[:n]
    only_a, only_b, p = mcnemar_exact(ra, rb)
    return n, sum(ra) / n, sum(rb) / n, only_a, only_b, p


def flattened(pts: list[tuple[int, dict]]) -> tuple[int | None, str]:
    """Where the EOT curve flattens, and a sentence saying so: the last two counts must agree (McNemar p >=
    0.05 on the images both scored), and the curve is flat from the first count that no larger count is
    below. Comparing only neighbours would call a slowly falling curve flat at its start (random resize &
    pad fell 15%, 14%, 12%, 9%, 7% over 1 to 16 draws: each step within noise, the whole fall not)."""
    floor = next(((k, res) for k, res in pts if not any(_all_right(res, "adaptive"))), None)
    if floor:  # nothing can fall below no image at all
        k, res = floor
        return k, (f"at {k} draw{'s' if k > 1 else ''} no image is right on every draw ({len(res['labels'])} images), "
                   f"so no larger count can be lower")
    if len(pts) < 2:
        return None, "one draw count measured so far: the curve has no second point"
    (k1, a), (k2, b) = pts[-2], pts[-1]
    n, pa, pb, only_a, only_b, p = _compare(a, b)
    if p < 0.05:
        return None, (f"still falling at {k2} draws ({100 * pa:.1f}% at {k1}, {100 * pb:.1f}% at {k2} on the same {n} "
                      f"images; McNemar {only_a} vs {only_b}, p = {p:.3f})")
    for i, (k, res) in enumerate(pts):
        later = [_compare(res, other) for _, other in pts[i + 1:]]
        if all(c[5] >= 0.05 or c[3] <= c[4] for c in later):
            n, pa, pb, only_a, only_b, p = later[-1]
            return k, (f"from {k} draw{'s' if k > 1 else ''} on no larger count is lower on the same images "
                       f"({k} vs {pts[-1][0]} draws: "
                       f"{100 * pa:.1f}% vs {100 * pb:.1f}% right on every draw, McNemar {only_a} vs {only_b} "
                       f"discordant images, p = {p:.2f})")
    return None, f"still falling at {pts[-1][0]} draws"


def eot_curve_table(runs: dict[str, dict], group: str, split: str = "seen", prefix: str = "") -> str:
    pts = curve(runs, group, split, prefix)
    title = f"{MODELS[prefix]}, {TITLES.get(group, group)}"
    if not pts:
        return f"{title}: not run yet.\n"
    first = pts[0][1]
    head = (f"{title}: {first['attack']['title']} at {255 * first['attack']['eps']:.0f}/255, "
            f"each final image scored on {first['score_draws']} fresh draws of the defense.\n\n")
    lines = md.table(["EOT draws per step", "images", "mean accuracy over draws", "right on every draw", "vs the previous count (McNemar, right on every draw)", "mean expected loss: start → middle → last step"], [])
    prev = None
    for k, res in pts:
        s = randomized.summary(res)
        n, lc = s["n"], s["loss_curve"]
        if prev is None:
            versus = "-"
        else:
            m = min(n, len(prev["labels"]))
            a, b, p = mcnemar_exact(_all_right(res, "adaptive")[:m], _all_right(prev, "adaptive")[:m])
            versus = f"{'lower' if b > a and p < 0.05 else 'higher' if a > b and p < 0.05 else 'no different'} (p = {p:.2f}, n={m})"
        lines.append(f"| {k} | {n}{_state(res)} | {fmt_ci(s['adaptive']['mean'], n)} | {fmt_ci(s['adaptive']['all'], n)} "
                     f"| {versus} | {lc[0]:.2f} → {lc[len(lc) // 2]:.2f} → {lc[-1]:.2f} |")
        prev = res
    s = randomized.summary(first)
    extra = []
    if "clean" in s:
        extra.append(f"clean: {fmt_ci(s['clean']['mean'], s['n'])} mean over draws, {fmt_ci(s['clean']['all'], s['n'])} "
                     f"right on every draw")
    if "transfer" in s:
        extra.append(f"the same attack crafted on the undefended model (which it leaves at "
                     f"{100 * s.get('transfer_undefended', float('nan')):.1f}%): {fmt_ci(s['transfer']['mean'], s['n'])} "
                     f"mean, {fmt_ci(s['transfer']['all'], s['n'])} right on every draw")
    _, verdict = flattened(pts)
    if group.endswith("_apgd") and len(pts) == 1:  # run at one count by design: the PGD curve's flat count
        verdict = f"the strong attack is run at the count where the PGD curve flattened ({pts[0][0]} draw{'s' if pts[0][0] > 1 else ''})"
    lc = randomized.summary(pts[-1][1])["loss_curve"]
    at_floor = not any(_all_right(pts[-1][1], "adaptive"))  # nothing left for more iterations to take
    if len(lc) > 4 and lc[-1] > 1.05 * lc[-1 - len(lc) // 4] and not at_floor:
        k = pts[-1][0]
        verdict += (f"; at {k} draw{'s' if k > 1 else ''} the expected loss still rose over the last quarter of the steps "
                    f"({lc[-1 - len(lc) // 4]:.2f} → {lc[-1]:.2f}), so more iterations may lower the accuracy further")
    return head + "\n".join(lines) + "\n\n" + (("On the same images, " + "; ".join(extra) + ". ") if extra else "") \
        + f"Where the curve flattens: {verdict}.\n"


def reached(runs: dict[str, dict], group: str, split: str = "seen", prefix: str = "") -> dict | None:
    """The leaderboard's protocol entry of a row: the lowest 'right on every draw' over the curve."""
    pts = curve(runs, group, split, prefix)
    if not pts:
        return None
    k_flat, _ = flattened(pts)
    # the lowest over both attack families (the PGD curve and the strong attack at its flat count)
    every = pts + curve(runs, f"{group}_apgd", split, prefix)
    k, res = min(every, key=lambda p: (randomized.summary(p[1])["adaptive"]["all"], p[0]))
    s = randomized.summary(res)
    return {"draws_reached": pts[-1][0], "flat_at": k_flat, "at": k, "n": s["n"], "score_draws": s["score_draws"],
            "all": s["adaptive"]["all"], "mean": s["adaptive"]["mean"], "state": _state(pts[-1][1]),
            "at_state": f"; {res['done']} of {res['total']} images so far" if "total" in res else "", "attack": res["attack"]["title"]}


def published_draws(results: dict[str, dict]) -> dict[tuple[str, str], tuple[str, int]]:
    """(model, defense) -> (title, most EOT draws per step) of the randomized rows of the `demo.eval` runs,
    each of whose images was scored on one draw of the defense."""
    out = {}
    for name, res in results.items():
        model = "ViT" if name.startswith("vit_") else "ResNet"
        for row in res.get("defenses", []) if isinstance(res.get("defenses"), list) else []:
            if row.get("randomized") and row.get("eot_draws"):
                key = (model, row["name"])
                out[key] = (row["title"], max(out.get(key, ("", 0))[1], int(row["eot_draws"])))
    return out


GROUPS = (("rrp", "random_resize_pad"), ("rtpt", "rtpt"), ("ttc", "ttc"), ("tpt", "tpt"), ("tapt", "tapt"))
VIT_ONLY = {"tapt"}  # TAPT's starting prompts were trained on the ViT teaching model only


def leaderboard_section(runs: dict[str, dict], results: dict[str, dict] | None = None) -> str:
    """Per randomized row: EOT draws reached, the draws each image was scored on, and the protocol's number."""
    lines = md.table(["model", "defense", "attack", "EOT draws reached", "curve flat at", "scored on", "right on every draw (ranked by)", "mean over draws"], [])
    done = set()
    for prefix, model in MODELS.items():
        measured = [(g, n, reached(runs, g, prefix=prefix)) for g, n in GROUPS]
        # ranked by the lower of the two numbers, the share right on every draw
        for group, name, e in sorted((m for m in measured if m[2]), key=lambda m: -m[2]["all"]):
            done.add((model, name))
            flat = f"{e['flat_at']} draw{'s' if e['flat_at'] > 1 else ''}" if e["flat_at"] else "not yet"
            lines.append(f"| {model} | {TITLES[group]} | {e['attack']} | {e['draws_reached']}{e['state']} | {flat} "
                         f"| {e['score_draws']} draws per image | {fmt_ci(e['all'], e['n'])} (at {e['at']} draw{'s' if e['at'] > 1 else ''}{e['at_state']}) "
                         f"| {fmt_ci(e['mean'], e['n'])} |")
    for (model, name), (title, draws) in sorted(published_draws(results or {}).items()):
        if (model, name) not in done:
            lines.append(f"| {model} | {title} | PGD-10 / AutoAttack (`demo.eval`, not yet this protocol) | {draws} "
                         f"| - | 1 draw per image | see the table above | - |")
    return "\n".join(lines) + "\n"


# `metrics.paired_verdict` in the words of a comparison between two rows
VERDICT_WORDS = {"helps": "above", "no better than": "tied with", "worse": "below"}

PARTS = (("tuned", "the tuned prompt alone, on the full image"),
         ("vote", "the untuned prompt, reliability-weighted vote over the 64 views"),
         ("full", "R-TPT (both)"))


def _cell(res: dict | None, kind: str) -> str:
    if not res or not res.get(f"{kind}_right"):
        return "not run yet"
    s = randomized.summary(res)
    return f"{fmt_ci(s[kind]['mean'], s['n'])}{_state(res)}"


def _protocol_cell(res: dict | None) -> str:
    if not res or not res.get("adaptive_right"):
        return "not run yet"
    s = randomized.summary(res)
    return f"{fmt_ci(s['adaptive']['all'], s['n'])} (mean {100 * s['adaptive']['mean']:.1f}%){_state(res)}"


def rtpt_decomposition(runs: dict[str, dict]) -> str:
    """Clean on seen and held-out classes, and under the protocol, for each half of R-TPT and both; rows
    that share images are compared by McNemar."""
    lines = md.table(["R-TPT variant", "clean, seen (mean over 2 draws)", "clean, held-out", "EOT-PGD-10 at 4/255, 1 draw: right on every one of 10 draws (seen)"], [])
    for part, title in PARTS:
        protocol = runs.get("rand_rtpt_eot1_seen" if part == "full" else f"rand_rtpt_{part}_eot1_seen")
        lines.append(f"| {title} | {_cell(runs.get(f'rand_rtpt_clean_{part}_seen'), 'clean')} "
                     f"| {_cell(runs.get(f'rand_rtpt_clean_{part}_held_out'), 'clean')} | {_protocol_cell(protocol)} |")
    notes = []
    full = runs.get("rand_rtpt_eot1_seen")
    for part, title in PARTS[:2]:
        other = runs.get(f"rand_rtpt_{part}_eot1_seen")
        if full and other and full.get("adaptive_right") and other.get("adaptive_right"):
            n = min(len(full["labels"]), len(other["labels"]))
            verdict = paired_verdict(_all_right(full, "adaptive")[:n], _all_right(other, "adaptive")[:n])
            notes.append(f"under the attack, full R-TPT is {VERDICT_WORDS[verdict]} {title} (McNemar at 5%, {n} images)")
    return "\n".join(lines) + "\n" + (("\nOn the same images: " + "; ".join(notes) + ".\n") if notes else "")


def tapt_section(runs: dict[str, dict], results: dict[str, dict] | None = None) -> str:
    start, handed = runs.get("rand_tapt_start_seen"), runs.get("rand_tapt_from_start_seen")
    lines = md.table(["TAPT (ViT teaching model, 1/255, seen classes)", "clean", "under PGD-10"], [])
    lines.append(f"| the starting prompts alone (no adaptation), attacked directly | {_cell(start, 'clean')} "
                 f"| {_protocol_cell(start)} |")
    trans = "not run yet"
    if handed and handed.get("transfer_right"):
        s = randomized.summary(handed)
        trans = (f"{fmt_ci(s['transfer']['all'], s['n'])} right on every one of {s['score_draws']} draws (mean "
                 f"{100 * s['transfer']['mean']:.1f}%; the starting prompts keep "
                 f"{100 * s.get('transfer_undefended', float('nan')):.1f}% of them){_state(handed)}")
    lines.append(f"| the attack on the starting prompts, then TAPT adapts (its paper's threat model) "
                 f"| {_cell(handed, 'clean')} | {trans} |")
    through = next((r for r in (results or {}).get("vit_pgd1_tapt_seen", {}).get("defenses", []) if r["name"] == "tapt"), None)
    if through:
        n = (results or {})["vit_pgd1_tapt_seen"]["data"]["n"]
        lines.append(f"| the attack through TAPT's adaptation (`vit_pgd1_tapt_seen`, scored on one draw) "
                     f"| {fmt_ci(through['clean_accuracy'], n)} | {fmt_ci(through['robust_accuracy_worst'], n)} (worst case) |")
    return "\n".join(lines) + "\n"


def results_section(folder: Path = RESULTS_DIR) -> str:
    from .published import load as load_published

    runs = load(folder)
    parts = ["## The protocol for randomized defenses: EOT curves\n", PROSE]
    for prefix in MODELS:
        for group in TITLES:
            if curve(runs, group, prefix=prefix) or (prefix == "" and group not in VIT_ONLY):
                parts.append(eot_curve_table(runs, group, prefix=prefix))
    parts += ["## R-TPT decomposed: its tuning, its vote, both\n", DECOMPOSITION_PROSE, rtpt_decomposition(runs),
              "## TAPT's starting prompts\n", TAPT_PROSE, tapt_section(runs, load_published(folder))]
    parts.append("Commands:\n\n" + "\n".join(f"- `{r['command']}` ({r['seconds']:.0f} s{_state(r)})"
                                            for r in runs.values()) + "\n" if runs else "")
    return "\n".join(parts)


def paired_ranking(results: dict[str, dict]) -> str:
    """Each leaderboard row against the next one down, on the images both were attacked on, by McNemar."""
    from .published import defense_numbers, model_results

    numbers = defense_numbers(model_results(results, "teaching"))
    ranked = sorted((d for d in numbers.values() if "leaderboard_survivors" in d), key=lambda d: -d["leaderboard_worst"])
    lines = md.table(["row", "next row down", "images", "only the row survives", "only the next survives", "p", "verdict"], [])
    for d1, d2 in zip(ranked, ranked[1:]):
        (l1, ok1), (l2, ok2) = d1["leaderboard_survivors"], d2["leaderboard_survivors"]
        n = min(len(l1), len(l2))
        if l1[:n] != l2[:n]:
            continue
        a, b, p = mcnemar_exact(ok1[:n], ok2[:n])
        word = VERDICT_WORDS[paired_verdict(ok1[:n], ok2[:n])]
        lines.append(f"| {d1['title']} | {d2['title']} | {n} | {a} | {b} | {p:.3f} | {word} |")
    return "\n".join(lines) + "\n"


def leaderboard_text(folder: Path = RESULTS_DIR) -> str:
    from .published import load as load_published

    results = load_published(folder)
    return ("## Randomized rows under the protocol for randomized defenses\n\n" + LEADERBOARD_PROSE + "\n"
            + leaderboard_section(load(folder), results)
            + "\n## Neighbouring rows compared on the same images\n\n" + PAIRED_PROSE + "\n" + paired_ranking(results))
