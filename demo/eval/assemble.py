"""From per-image records to the result dict of `demo.eval`, and the merge of image shards.

`evaluate` collects, per image, every prediction and perturbation norm it measured, and per stage the
total time and encoder passes; `summarize` turns those records into every accuracy, rate and norm of the
result. A run split into image shards (`--start`/`--n`) is merged by concatenating the shards' per-image
records and calling the same `summarize`, so the merged result is the unsharded one: every prediction
and metric is identical, only wall times differ (they are measured, and summed over shards).
"""
from __future__ import annotations

import torch

from . import metrics as M

# Result fields that are measured times, not outcomes: the only ones a merge cannot reproduce exactly.
TIMING_FIELDS = ("ms_per_image", "adaptive_attack_ms_per_image", "seconds", "threads", "command")


class MergeError(ValueError):
    """Shards that do not make one run: another setting, a gap or an overlap in their image ranges."""


def _t(values, dtype=torch.long) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def _per_image_cost(cost: dict, n: int) -> tuple[float, dict]:
    return cost["ms"] / n, {k: cost[k] / n for k in ("forward", "grad")}


def summarize(meta: dict, raw: dict) -> dict:
    """meta: the run's setting (model, data, attack, seed, ...); raw: per-image lists and cost totals."""
    labels = _t(raw["labels"])
    n = labels.shape[0]
    clean, adv = _t(raw["clean_pred"]), _t(raw["adv_pred"])
    linf, l2 = _t(raw["linf"], torch.float32), _t(raw["l2"], torch.float32)
    undefended = {
        "clean_accuracy": M.accuracy(clean, labels),
        "robust_accuracy": M.accuracy(adv, labels),
        "attack_success_rate": M.attack_success_rate(clean, adv, labels),
        "mean_linf": float(linf.mean()) if n else float("nan"),
        "mean_l2": float(l2.mean()) if n else float("nan"),
    }
    undefended["ms_per_image"], undefended["passes_per_image"] = _per_image_cost(raw["cost"]["attack"], n)
    if raw.get("target") is not None:
        undefended["targeted_success_rate"] = M.targeted_success_rate(adv, _t(raw["target"]), labels)
    rows = []
    for r in raw["rows"]:
        row = {k: r[k] for k in ("name", "title", "paradigm", "differentiable", "randomized", "eot_draws")}
        if r.get("error"):
            rows.append({**row, "error": r["error"]})
            continue
        per = r["per_image"]
        d_clean, d_obl = _t(per["clean_pred"]), _t(per["oblivious_pred"])
        row.update({
            "clean_accuracy": M.accuracy(d_clean, labels),
            "robust_accuracy_oblivious": M.accuracy(d_obl, labels),
            "attack_success_rate_oblivious": M.attack_success_rate(d_clean, d_obl, labels),
        })
        row["ms_per_image"], row["passes_per_image"] = _per_image_cost(r["cost"]["defense"], n)
        row["per_image"] = dict(per)
        if "adaptive_pred" in per:
            d_ad = _t(per["adaptive_pred"])
            variants = {v: _t(p) for v, p in r.get("variants", {}).items()}
            if variants:
                row["adaptive_variants"] = {
                    v: {"robust_accuracy": M.accuracy(p, labels), "pred": p.tolist(),
                        "ms_per_image": r["cost"][f"variant/{v}"]["ms"] / n} for v, p in variants.items()}
            ad_linf = _t(per["adaptive_linf"], torch.float32)
            ad_l2 = _t(per["adaptive_l2"], torch.float32)
            row.update({
                "robust_accuracy_adaptive": M.accuracy(d_ad, labels),
                # An image counts as robust only if it survives every attack tried on it.
                "robust_accuracy_worst": M.worst_case_accuracy([d_obl, d_ad, *variants.values()], labels),
                "adaptive_weaker_than_oblivious": M.significantly_above(M.accuracy(d_ad, labels),
                                                                        M.accuracy(d_obl, labels), n),
                "attack_success_rate_adaptive": M.attack_success_rate(d_clean, d_ad, labels),
                "adaptive_mean_linf": float(ad_linf.mean()),
                "adaptive_mean_l2": float(ad_l2.mean()),
            })
            row["adaptive_attack_ms_per_image"], row["adaptive_attack_passes_per_image"] = _per_image_cost(
                r["cost"]["adaptive"], n)
        rows.append(row)
    per_image = {k: raw.get(k) for k in ("labels", "clean_pred", "adv_pred", "target", "linf", "l2")}
    return {**meta, "undefended": undefended, "defenses": rows, "per_image": per_image}


def _cost_total(per_image_ms: float, passes: dict | None, n: int) -> dict:
    passes = passes or {}
    return {"ms": per_image_ms * n, "forward": passes.get("forward", 0.0) * n, "grad": passes.get("grad", 0.0) * n}


def raw_of(result: dict) -> dict:
    """The per-image records and cost totals a result was summarized from (the inverse of `summarize`)."""
    n, per, u = result["data"]["n"], result["per_image"], result["undefended"]
    if "linf" not in per:
        raise MergeError("this result has no per-image norms (it predates image shards); rerun it to merge it")
    raw = {k: per[k] for k in ("labels", "clean_pred", "adv_pred", "target", "linf", "l2")}
    raw["cost"] = {"attack": _cost_total(u["ms_per_image"], u["passes_per_image"], n)}
    raw["rows"] = []
    for row in result["defenses"]:
        r = {k: row.get(k) for k in ("name", "title", "paradigm", "differentiable", "randomized", "eot_draws", "error")}
        if not row.get("error"):
            r["per_image"] = row["per_image"]
            r["cost"] = {"defense": _cost_total(row["ms_per_image"], row["passes_per_image"], n)}
            if "robust_accuracy_adaptive" in row:
                r["cost"]["adaptive"] = _cost_total(row["adaptive_attack_ms_per_image"],
                                                    row["adaptive_attack_passes_per_image"], n)
            r["variants"] = {v: d["pred"] for v, d in row.get("adaptive_variants", {}).items()}
            for v, d in row.get("adaptive_variants", {}).items():
                r["cost"][f"variant/{v}"] = _cost_total(d["ms_per_image"], None, n)
        raw["rows"].append(r)
    return raw


def _setting(result: dict) -> tuple:
    data = {k: v for k, v in result["data"].items() if k not in ("n", "start")}
    return (repr(result["model"]), repr(data), repr(result["attack"]), result["seed"], result["batch_size"],
            result["adaptive"], result["eot"], [r["name"] for r in result["defenses"]])


def _concat(raws: list[dict], ms_weights: list[float] | None = None) -> dict:
    """`ms_weights`: how much each shard's measured milliseconds count (see `timing_weights`)."""
    w = ms_weights or [1.0] * len(raws)

    def total(costs: list[dict]) -> dict:
        return {k: sum(c[k] * (wi if k == "ms" else 1.0) for c, wi in zip(costs, w)) for k in ("ms", "forward", "grad")}

    out = {k: [v for r in raws for v in r[k]] for k in ("labels", "clean_pred", "adv_pred", "linf", "l2")}
    out["target"] = None if raws[0]["target"] is None else [v for r in raws for v in r["target"]]
    out["cost"] = {"attack": total([r["cost"]["attack"] for r in raws])}
    out["rows"] = []
    for i, first in enumerate(raws[0]["rows"]):
        parts = [r["rows"][i] for r in raws]
        errors = [p["error"] for p in parts if p.get("error")]
        row = {k: v for k, v in first.items() if k not in ("per_image", "cost", "variants", "error")}
        if errors:
            out["rows"].append({**row, "error": errors[0]})
            continue
        row["per_image"] = {k: [v for p in parts for v in p["per_image"][k]] for k in first["per_image"]}
        row["variants"] = {v: [x for p in parts for x in p["variants"][v]] for v in first.get("variants", {})}
        row["cost"] = {c: total([p["cost"][c] for p in parts]) for c in first["cost"]}
        out["rows"].append(row)
    return out


def merge(shards: list[dict], command: str | None = None) -> dict:
    """One result from image shards of the same run; they must cover one contiguous range of images."""
    if not shards:
        raise MergeError("no shards to merge")
    shards = sorted(shards, key=lambda r: r["data"].get("start", 0))
    first = shards[0]
    at = first["data"].get("start", 0)
    for s in shards:
        if _setting(s) != _setting(first):
            raise MergeError(f"shard at image {s['data'].get('start', 0)} was run with another setting")
        if s["data"].get("start", 0) != at:
            raise MergeError(f"shards leave a gap or overlap at image {at} (next shard starts at "
                             f"{s['data'].get('start', 0)})")
        at += s["data"]["n"]
    meta = {k: v for k, v in first.items() if k not in ("undefended", "defenses", "per_image")}
    meta["data"] = {**first["data"], "n": at - first["data"].get("start", 0)}
    meta["seconds"] = sum(s["seconds"] for s in shards)
    meta["shards"] = [{"start": s["data"].get("start", 0), "n": s["data"]["n"], "seconds": s["seconds"],
                       "device": s["device"], "threads": s["threads"]} for s in shards]
    weights = timing_weights(shards)
    if any(x == 0.0 for x in weights):
        meta["device"] = "cpu"
        meta["timing"] = "per-image times from the CPU shards only (the others ran on a GPU)"
    if command is not None:
        meta["command"] = command
    return summarize(meta, _concat([raw_of(s) for s in shards], weights))


def timing_weights(shards: list[dict]) -> list[float]:
    """How much each shard's milliseconds count in the merged per-image times. Shards run on one kind of
    device count once each. When some ran on the CPU and some on a GPU, a sum would be neither machine's
    time: only the CPU shards count, scaled to every image, so the merged times stay CPU times (what the
    published tables state) while every outcome still comes from every shard."""
    cpu = [s["device"] == "cpu" for s in shards]
    if all(cpu) or not any(cpu):
        return [1.0] * len(shards)
    n_all = sum(s["data"]["n"] for s in shards)
    n_cpu = sum(s["data"]["n"] for s, c in zip(shards, cpu) if c)
    return [n_all / n_cpu if c else 0.0 for c in cpu]
