"""Rendering an evaluation result (the dict from `run.evaluate`) as markdown and JSON files."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..metrics import fmt_ci, fmt_pct
from . import markdown as md


def _num(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _passes(p: dict | None) -> str:
    if not p:
        return "n/a"
    total = p.get("forward", 0.0) + p.get("grad", 0.0)
    return f"{total:.3g}" + (f" ({p['grad']:.3g} grad)" if p.get("grad") else "")


def _param(name: str, value, linf_unit: bool) -> str:
    if isinstance(value, float) and linf_unit:
        return f"{name}={value * 255:.3g}/255"
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"


def attack_label(result: dict) -> str:
    a = result["attack"]
    units = a.get("units", {})
    params = ", ".join(_param(k, v, units.get(k) == "/255") for k, v in a["params"].items())
    return f"{a['title']} ({params}{', targeted' if a['targeted'] else ''})"


def markdown(result: dict) -> str:
    u, data, model = result["undefended"], result["data"], result["model"]
    n = int(data["n"])
    lines = [
        "# Robustness results",
        "",
        f"Produced by `{result['command']}`" if result.get("command") else "",
        "",
        f"- Model: {model['label']} (`{model['key']}`, {model['image_size']} px)",
        f"- Data: {data['source']}, {data['n']} images, {data['num_classes']} classes, "
        f"prompt template {', '.join(repr(t) for t in data['templates'])}",
        f"- Attack: {attack_label(result)}, seed {result['seed']}",
        f"- Device: {result['device']}, {result['threads']} threads, batch size {result['batch_size']}; "
        f"total {result['seconds']:.0f} s",
        "",
        "## Undefended model",
        "",
        *md.table(["clean acc.", "robust acc.", "attack success", "mean L-inf", "mean L2", "attack ms/image",
                   "passes/image"],
                  [[fmt_ci(u["clean_accuracy"], n), fmt_ci(u["robust_accuracy"], n), fmt_pct(u["attack_success_rate"]),
                    f"{_num(u['mean_linf'] * 255, 2)}/255", _num(u["mean_l2"], 3), _num(u["ms_per_image"]),
                    _passes(u["passes_per_image"])]]),
    ]
    if "targeted_success_rate" in u:
        lines += ["", f"Targeted success (prediction = chosen target): {fmt_pct(u['targeted_success_rate'])}"]
    if result["defenses"]:
        adaptive = result.get("adaptive")
        head = ["defense", "paradigm", "clean acc.", "robust acc. (oblivious)"]
        if adaptive:
            head += ["robust acc. (adaptive)", "robust acc. (worst case)", "adaptive attack ms/image"]
        head += ["defense ms/image", "defense passes/image"]
        rows = []
        for row in result["defenses"]:
            title = f"{row['title']} (`{row['name']}`)"
            if "error" in row:
                rows.append([title, row["paradigm"], f"not run: {row['error']}"] + [""] * (len(head) - 3))
                continue
            cells = [title, row["paradigm"], fmt_ci(row["clean_accuracy"], n), fmt_ci(row["robust_accuracy_oblivious"], n)]
            if adaptive:
                flag = " ⚠" if row.get("adaptive_weaker_than_oblivious") else ""
                cells += [fmt_ci(row["robust_accuracy_adaptive"], n) + flag, fmt_ci(row.get("robust_accuracy_worst"), n),
                          _num(row["adaptive_attack_ms_per_image"])]
            cells += [_num(row["ms_per_image"]), _passes(row["passes_per_image"])]
            rows.append(cells)
        lines += ["", "## Defenses", "", *md.table(head, rows)]
    lines += [
        "",
        f"Brackets: 95% Wilson interval over the {n} images; two accuracies whose intervals overlap may not "
        "differ. Worst case: the share of images that survive both the oblivious and the adaptive attack. "
        "⚠: the adaptive attack did worse than the oblivious one beyond the noise, so it failed to use "
        "what it knows; the worst case is then the number to trust. Robust accuracy is measured on the uint8-quantized adversarial image (what a saved PNG holds). "
        "Attack success = share of the images classified correctly when clean that the attack makes wrong. "
        "Oblivious: the attack targets the undefended model and the defense then classifies its image. "
        "Adaptive: the attack targets the defense itself (BPDA through non-differentiable steps, EOT over "
        "randomness). A pass is one image through the image encoder; a grad pass also runs the backward. "
        "Norms are in [0,1] pixel units (L-inf shown in /255).",
        "",
    ]
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))


def finite_json(x):
    """NaN (e.g. attack success when nothing was classified right) becomes null: strict JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    return x


def write(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write `<out>.json` and `<out>.md` (parent folders created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    md_path.write_text(markdown(result))
    # The JSON last and whole (renamed into place): a shard counts as done when its JSON exists, so a
    # process stopped mid-write must not leave a truncated one behind.
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(finite_json(result), indent=2, allow_nan=False) + "\n")
    tmp.replace(json_path)
    return json_path, md_path
