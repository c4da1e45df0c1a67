"""The published evaluation: the JSON files under docs/results/ that `python -m demo.eval.suite` writes,
read into per-defense numbers. docs/results.md, docs/leaderboard.md and the app's Learn tab all read
them through here, so every number they show has one source.

Runs are named `<attack><eps>_<group>_<split>` (e.g. `pgd4_main_seen`, `aa1_training_time_seen`);
`eot_<defense>_<draws>` are the EOT-draws measurement and `sanity` the sanity checks.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import markdown as md

RESULTS_DIR = Path(__file__).resolve().parents[3] / "docs" / "results"
_RUN = re.compile(r"^(?P<attack>pgd|aa)(?P<eps>\d+)_(?P<group>.+)_(?P<split>seen|held_out)$")


def load(folder: Path | str = RESULTS_DIR) -> dict[str, dict]:
    """Every result file in `folder`, by run name (file stem); {} when nothing was published."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _undefended_row(result: dict) -> dict:
    u, per = result["undefended"], result["per_image"]
    return {"name": "none", "title": "None", "paradigm": "none", "differentiable": True, "randomized": False,
            "clean_accuracy": u["clean_accuracy"], "robust_accuracy_oblivious": u["robust_accuracy"],
            "robust_accuracy_adaptive": u["robust_accuracy"], "robust_accuracy_worst": u["robust_accuracy"],
            "ms_per_image": 0.0, "per_image": {"clean_pred": per["clean_pred"], "oblivious_pred": per["adv_pred"],
                                               "adaptive_pred": per["adv_pred"]}}


def rows(results: dict[str, dict]) -> dict[tuple[str, int, str], dict[str, dict]]:
    """{(attack, eps, split): {defense name: row}}; each row also gets "n", "labels" and "run". When several
    runs attacked a defense the same way (e.g. AutoAttack with 4 and with 16 EOT draws), the row is the one
    with the lowest worst case, and the others are kept under "also" so per-image worst cases count them."""
    out: dict[tuple[str, int, str], dict[str, dict]] = {}
    for run, result in results.items():
        m = _RUN.match(run)
        if not m:
            continue
        table = out.setdefault((m["attack"], int(m["eps"]), m["split"]), {})
        found = [r for r in result["defenses"] if "error" not in r]
        if not any(r["name"] == "none" for r in found):
            found = [_undefended_row(result)] + found
        for row in found:
            if row["name"] == "none":
                row = {**row, "paradigm": "none", "title": "None (undefended)"}
            entry = {**row, "n": result["data"]["n"], "labels": result["per_image"]["labels"], "run": run,
                     "seconds": result["seconds"], "command": result.get("command", "")}
            old = table.get(row["name"])
            if old is None:
                table[row["name"]] = entry
            elif row["name"] != "none":
                low, high = sorted((old, entry), key=lambda r: (r.get("robust_accuracy_worst") or 0.0, r["run"]))
                table[row["name"]] = {**low, "also": low.get("also", []) + [{k: v for k, v in high.items() if k != "also"}]
                                      + high.get("also", [])}
    return out


def per_image_survivors(entries: list[dict], k: int | None = None) -> tuple[list[int], list[bool]]:
    """Labels of the first k images (all shared ones by default) and, per image, whether it is correct
    under every attack of every entry (rows of the same defense from several runs, on the same images in
    the same order)."""
    n = min(len(e["labels"]) for e in entries) if k is None else k
    labels = entries[0]["labels"][:n]
    ok = [True] * n
    for e in entries:
        assert e["labels"][:n] == labels, "runs must share their first images"
        per = e["per_image"]
        preds = [per["oblivious_pred"]] + ([per["adaptive_pred"]] if "adaptive_pred" in per else [])
        preds += [v["pred"] for v in e.get("adaptive_variants", {}).values()]
        for p in preds:
            ok = [o and a == y for o, a, y in zip(ok, p[:n], labels)]
    return labels, ok


def per_image_worst(entries: list[dict], k: int | None = None) -> tuple[float, int]:
    """Share of the first k images (all shared ones by default) correct under every attack of every entry."""
    labels, ok = per_image_survivors(entries, k)
    return sum(ok) / max(len(labels), 1), len(labels)


_PROTOCOL = re.compile(r"^rand_[a-z]+(?:_apgd)?_eot(?P<k>\d+)_(?P<split>seen|held_out)$")


def protocol_entries(results: dict[str, dict], name: str, split: str, eps: int = 4) -> list[dict]:
    """The finished runs of the protocol for randomized defenses (`demo.eval.randomized`) on the method
    itself (no option switched off) at `eps`/255, as leaderboard entries: an image counts as surviving a
    run only if it was right on every scoring draw, after the adaptive attack and after the transfer attack
    (the field's rule: a randomized defense is as robust as its unluckiest draw)."""
    out = []
    for run, res in sorted(results.items()):
        m = _PROTOCOL.match(run)
        if (not m or m["split"] != split or res.get("protocol") != "randomized" or res["defense"]["name"] != name
                or res["defense"].get("options") or res.get("surrogate") or not res.get("adaptive_right")
                or round(255 * res["attack"]["eps"]) != eps):
            continue
        labels, draws = res["labels"], res["score_draws"]
        preds = {kind: [y if r == draws else -1 for r, y in zip(res[f"{kind}_right"], labels)]
                 for kind in ("adaptive", "transfer") if res.get(f"{kind}_right")}
        out.append({"labels": labels, "run": run, "n": len(labels), "eot_draws": res["attack"]["eot"],
                    "score_draws": draws, "per_image": {"oblivious_pred": preds.get("transfer", labels),
                                                        "adaptive_pred": preds["adaptive"]}})
    return out


def defense_numbers(results: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per defense: title, paradigm and, where run, {"seen"|"held_out": {clean, oblivious, adaptive,
    worst, n}} at PGD-10 4/255 and {"aa1"|"aa4": {...}} under AutoAttack, plus "leaderboard_worst"
    (per-image worst case over every attack run on the seen classes) with its n."""
    results = load() if results is None else results
    tables = rows(results)
    out: dict[str, dict] = {}
    for (attack, eps, split), table in tables.items():
        for name, row in table.items():
            d = out.setdefault(name, {"title": row["title"], "paradigm": row["paradigm"]})
            key = split if attack == "pgd" and eps == 4 else f"{attack}{eps}" + ("" if split == "seen" else "_held_out")
            d[key] = {"clean": row["clean_accuracy"], "oblivious": row["robust_accuracy_oblivious"],
                      "adaptive": row.get("robust_accuracy_adaptive"), "worst": row.get("robust_accuracy_worst"),
                      "n": row["n"], "ms": row.get("ms_per_image"), "flag": bool(row.get("adaptive_weaker_than_oblivious")),
                      "variants": {k: v["robust_accuracy"] for k, v in row.get("adaptive_variants", {}).items()}}
            # {{jpeg.seen.diff}}: the adaptive attack through the step's differentiable stand-in, beside
            # {{jpeg.seen.adaptive}} (BPDA), where the row's run had one
            if d[key]["variants"]:
                d[key]["diff"] = min(d[key]["variants"].values())
    for name, d in out.items():
        for split, prefix in (("seen", "leaderboard"), ("held_out", "leaderboard_held_out")):
            entries = [e for k in tables if k[2] == split and k[1] == 4 and name in tables[k]
                       for e in [tables[k][name]] + tables[k][name].get("also", [])]
            with_adaptive = [e for e in entries if "adaptive_pred" in e["per_image"]]
            if with_adaptive:
                protocol = protocol_entries(results, name, split)
                labels, ok = per_image_survivors(with_adaptive + protocol)
                d[f"{prefix}_worst"], d[f"{prefix}_n"] = sum(ok) / max(len(ok), 1), len(ok)
                d[f"{prefix}_survivors"] = (labels, ok)
                d[f"{prefix}_attacks"] = sorted({e["run"].split("_")[0] for e in with_adaptive + protocol})
                # {{defense.board.worst}} / {{defense.board.n}} in texts: the leaderboard's own number
                d["board" if split == "seen" else "board_held_out"] = {"worst": d[f"{prefix}_worst"], "n": d[f"{prefix}_n"]}
                for family, runs in (("protocol", [e for e in protocol if "_apgd_" not in e["run"]]),
                                     ("strong", [e for e in protocol if "_apgd_" in e["run"]])):
                    if not runs or split != "seen":
                        continue
                    # {{rtpt.protocol.worst}}: the lowest share right on every scoring draw over the EOT
                    # counts of the PGD sweep, with its count ({{rtpt.protocol.eot}}) and the most draws
                    # reached; {{rtpt.strong.*}} the same for the strong attack (EOT-APGD) at the flat count
                    shares = [(sum(p == y for p, y in zip(e["per_image"]["adaptive_pred"], e["labels"])) / e["n"],
                               e["eot_draws"], e) for e in runs]
                    low, at, e = min(shares, key=lambda t: (t[0], t[1]))
                    d[family] = {"worst": low, "n": e["n"], "eot": at, "draws": e["score_draws"],
                                 "reached": max(t[1] for t in shares)}
                if protocol:
                    d[f"{prefix}_protocol"] = {"eot_draws": max(e["eot_draws"] for e in protocol),
                                               "strong": any("_apgd_" in e["run"] for e in protocol),
                                               "score_draws": min(e["score_draws"] for e in protocol),
                                               "n": min(e["n"] for e in protocol),
                                               "without": per_image_worst(with_adaptive)}
    return out


# Runs of the ViT teaching model are published under the ResNet model's names with a `vit_` prefix.
PREFIXES = {"teaching": "", "teaching-vit": "vit_"}


def model_results(results: dict[str, dict], model: str) -> dict[str, dict]:
    """One teaching model's runs, under the names the functions here read."""
    prefix = PREFIXES[model]
    if prefix:
        return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
    others = tuple(p for p in PREFIXES.values() if p)
    return {k: v for k, v in results.items() if not k.startswith(others)}


# {{defense.split.field}}, or {{vit:defense.split.field}} for the ViT teaching model's runs (docs/results/vit_*).
_TOKEN = re.compile(r"\{\{(?:(\w+):)?(\w+)\.(\w+)\.(\w+)\}\}")


def sanity_eps(results: dict[str, dict] | None = None) -> dict[str, dict[str, float]]:
    """{model: {eps in /255 as text: accuracy}} from the sanity checks' budget sweep (PGD-10 white-box)."""
    results = load() if results is None else results
    checks = results.get("sanity", {}).get("checks", [])
    return {c["model"]: {k.split("/")[0]: v for k, v in c["values"].items()}
            for c in checks if c["check"] == "accuracy does not rise with eps"}


def fill(text: str, numbers: dict[str, dict] | None = None, sweep: dict | None = None) -> str:
    """Replace {{defense.split.field}} (e.g. {{ttc.seen.worst}}) by the published accuracy in percent, and
    {{defense.split.n}} by its number of images, so teaching texts quote the results instead of copies of
    them; {{vit:defense.split.field}} quotes the ViT teaching model's runs; {{sanity.model.eps}} (e.g.
    {{sanity.tecoa.16}}) quotes the sanity checks' budget sweep. "n/a" where it was not run."""
    numbers = defense_numbers() if numbers is None else numbers
    by_model = {None: numbers}

    def model_numbers(prefix: str) -> dict:
        if prefix not in by_model:  # read once per call, only when a text quotes that model
            model = next((m for m, p in PREFIXES.items() if p and p.rstrip("_") == prefix), None)
            by_model[prefix] = defense_numbers(model_results(load(), model)) if model else {}
        return by_model[prefix]

    def sub(m: re.Match) -> str:
        name, split, field = m[2], m[3], m[4]
        if name == "sanity" and m[1] is None:
            value = (sanity_eps() if sweep is None else sweep).get(split, {}).get(field)
        else:
            value = model_numbers(m[1]).get(name, {}).get(split, {}).get(field)
        if value is None:
            return "n/a"
        return str(int(value)) if field in ("n", "eot", "draws", "reached") else f"{100 * value:.1f}%"

    return _TOKEN.sub(sub, text)


def paradigm_table(paradigm: str, numbers: dict[str, dict] | None = None) -> str:
    """A markdown table of the published numbers of one paradigm's defenses (with the undefended row)."""
    numbers = defense_numbers() if numbers is None else numbers
    names = ["none"] + [k for k, d in numbers.items() if d["paradigm"] == paradigm]
    names = [k for k in names if k in numbers and "seen" in numbers[k]]
    if len(names) < 2:
        return ""

    def pct(d: dict | None, field: str) -> str:
        return "not run" if not d or d.get(field) is None else f"{100 * d[field]:.1f}%"

    aa = any(numbers[k].get("aa4") for k in names if k != "none")
    rows = [[numbers[k]["title"], pct(numbers[k].get("seen"), "clean"), pct(numbers[k].get("seen"), "worst"),
             pct(numbers[k].get("held_out"), "worst")] + ([pct(numbers[k].get("aa4"), "worst")] if aa else [])
            for k in names]
    header = ["defense", "clean", "robust, worst case", "robust, held-out classes"] + (["AutoAttack 4/255"] if aa else [])
    return ("Measured on the teaching model, PGD-10 at 4/255, the worst case over the oblivious and the adaptive "
            "attack (all numbers, intervals and commands: docs/results.md):\n\n" + md.text(header, rows))
