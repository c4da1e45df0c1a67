"""The lessons' tables in docs/results.md and the numbers their Learn texts quote: random noise against
PGD-10 at the same budget, transfer from one model to another, and the three paradigms stacked.

Every number is read from docs/results/*.json (the runs `demo.eval.runs` lists under LESSON_RUNS and
pgd4_stack_seen). Learn texts quote them as {{run:RUN.FIELD}} (`fill`), e.g.
{{run:lesson_noise_corners_4.robust}}; the fields are those of `run_numbers`.
"""
from __future__ import annotations

import re

from .. import metrics as M
from . import markdown as md, published as P
from ..runs import LESSON_MODELS, NOISE_EPS, TRANSFERS

TITLES = {"teaching": "ResNet", "teaching-vit": "ViT", "teaching-tecoa": "ResNet, TeCoA tower",
          "teaching-fare": "ResNet, FARE tower", "teaching-vit-tecoa": "ViT, TeCoA tower",
          "teaching-vit-fare": "ViT, FARE tower"}
# The white-box run of each model at PGD-10 4/255 on the same first images: a base model's own lesson run,
# or for a robust twin, its row in the main table (attacking the twin is its adaptive attack).
WHITE_BOX = {"teaching": ("lesson_pgd_4", None), "teaching-vit": ("vit_lesson_pgd_4", None),
             "teaching-tecoa": ("pgd4_main_seen", "tecoa"), "teaching-fare": ("pgd4_main_seen", "fare"),
             "teaching-vit-tecoa": ("vit_pgd4_main_seen", "tecoa"), "teaching-vit-fare": ("vit_pgd4_main_seen", "fare")}
STACK_RUN = "pgd4_stack_seen"


def _ok(preds: list[int], labels: list[int]) -> list[bool]:
    return [p == y for p, y in zip(preds, labels)]


def white_box_ok(results: dict, model: str, k: int) -> list[bool] | None:
    """Per image (first k), whether `model` survives PGD-10 at 4/255 aimed at itself."""
    run, row = WHITE_BOX[model]
    r = results.get(run)
    if r is None or r["data"]["n"] < k:
        return None
    labels = r["per_image"]["labels"][:k]
    if row is None:
        return _ok(r["per_image"]["adv_pred"][:k], labels)
    d = next((d for d in r["defenses"] if d["name"] == row and "per_image" in d), None)
    return None if d is None else _ok(d["per_image"]["adaptive_pred"][:k], labels)


def transfer_numbers(results: dict, name: str, source: str, target: str) -> dict | None:
    """The answering model's accuracy on the transferred images, and the transfer rate: among the images
    both models get right when clean and the attack fools the model it was crafted on, the share that
    also fool the answering model (Liu et al. 2017 count transfer the same way)."""
    r = results.get(name)
    if r is None:
        return None
    n, per = r["data"]["n"], r["per_image"]
    labels = per["labels"]
    src = results.get(WHITE_BOX[source][0])
    out = {"n": n, "clean": r["undefended"]["clean_accuracy"], "robust": r["undefended"]["robust_accuracy"],
           "seconds": r["seconds"], "command": r["command"]}
    own = white_box_ok(results, target, n)
    out["target_white_box"] = None if own is None else sum(own) / n
    if src is None or src["data"]["n"] < n:
        return out
    s = src["per_image"]
    fooled = [c == y and a != y for c, a, y in zip(s["clean_pred"], s["adv_pred"], labels)]
    pool = [f and c == y for f, c, y in zip(fooled, per["clean_pred"], labels)]
    moved = [p and a != y for p, a, y in zip(pool, per["adv_pred"], labels)]
    out.update(source_robust=sum(_ok(s["adv_pred"][:n], labels)) / n, pool=sum(pool),
               transfer_rate=sum(moved) / sum(pool) if sum(pool) else float("nan"))
    return out


def run_numbers(results: dict | None = None) -> dict[str, dict]:
    """Per lesson run: clean, robust (undefended), n, mean_l2, mean_linf (/255), seconds; transfers add
    transfer_rate, source_robust and target_white_box; the stack run adds its row's worst, adaptive,
    oblivious and dclean (the stacked model's clean accuracy), and best_part (the worst case of its best
    single part on the same images)."""
    results = P.load() if results is None else results
    out = {}
    for name, r in results.items():
        if not (name.startswith(("lesson_", "vit_lesson_", "transfer_")) or name == STACK_RUN):
            continue
        u = r["undefended"]
        d = {"clean": u["clean_accuracy"], "robust": u["robust_accuracy"], "n": r["data"]["n"],
             "mean_l2": u["mean_l2"], "mean_linf": 255 * u["mean_linf"], "seconds": r["seconds"]}
        row = next((x for x in r.get("defenses", []) if x["name"] != "none" and "error" not in x), None)
        if row is not None:
            d.update(dclean=row["clean_accuracy"], oblivious=row["robust_accuracy_oblivious"],
                     adaptive=row.get("robust_accuracy_adaptive"), worst=row.get("robust_accuracy_worst"))
        out[name] = d
    stack, _, worst = stack_rows(results)
    best = best_part(stack, worst) if stack else None
    if best and STACK_RUN in out:
        out[STACK_RUN]["best_part"] = worst[best][0]  # its best single part's worst case on the same images
    for name, source, target in TRANSFERS:
        t = transfer_numbers(results, name, source, target)
        if t:
            out[name].update({k: v for k, v in t.items() if k not in ("command",)})
    out.update({name: protocol_numbers(r) for name, r in results.items()
                if r.get("protocol") == "randomized" and r.get("labels")})
    return out


def protocol_numbers(r: dict) -> dict:
    """A run of the protocol for randomized defenses: per kind (robust = the adaptive attack, clean,
    transfer) the share of images right on every scoring draw, and the mean over draws (`<kind>_mean`);
    n, draws (scoring draws per image), eot (draws per attack step)."""
    n, draws = len(r["labels"]), r["score_draws"]
    d = {"n": n, "draws": draws, "eot": r["attack"]["eot"], "seconds": r["seconds"]}
    for kind, key in (("robust", "adaptive"), ("clean", "clean"), ("transfer", "transfer")):
        right = r.get(f"{key}_right")
        if right:
            d[kind], d[f"{kind}_mean"] = sum(x == draws for x in right) / n, sum(right) / (n * draws)
    return d


_TOKEN = re.compile(r"\{\{run:(\w+)\.(\w+)\}\}")
_COUNTS = ("n", "pool", "draws", "eot")


def fill(text: str, numbers: dict[str, dict] | None = None) -> str:
    """Replace {{run:RUN.FIELD}} by the published value: accuracies in percent, n as a whole number,
    seconds rounded; "n/a" where the run is not published yet. {{ci:N}}: the width in points of the 95%
    interval of an accuracy near one half measured on N images."""
    numbers = run_numbers() if numbers is None else numbers

    def sub(m: re.Match) -> str:
        value = numbers.get(m[1], {}).get(m[2])
        if value is None or value != value:
            return "n/a"
        if m[2] in _COUNTS:
            return str(int(value))
        if m[2] == "seconds":
            return f"{value:.0f} s"
        if m[2] in ("mean_l2", "mean_linf"):
            return f"{value:.2f}"
        return f"{100 * value:.1f}%"

    return _CI.sub(lambda m: f"{100 * _width(int(m[1])):.0f}", _TOKEN.sub(sub, text))


_CI = re.compile(r"\{\{ci:(\d+)\}\}")


def _width(n: int, p: float = 0.5) -> float:
    """Width of the 95% Wilson interval of an accuracy p measured on n images ({{ci:N}} in texts, at 1/2)."""
    lo, hi = M.wilson_interval(p, n)
    return hi - lo


def _ci(d: dict | None, field: str) -> str:
    return "not run" if not d or d.get(field) is None else M.fmt_ci(d[field], d["n"])


def noise_table(numbers: dict[str, dict]) -> str:
    lines = md.table(["model", "budget", "clean", "random corners (±eps per pixel)", "Gaussian, same L2 norm", "PGD-10"], [])
    for model, prefix in LESSON_MODELS.items():
        for eps in NOISE_EPS:
            c, g, p = (numbers.get(f"{prefix}lesson_{k}_{eps}") for k in ("noise_corners", "noise_gaussian", "pgd"))
            ref = c or g or p
            lines.append(f"| {TITLES[model]} | {eps}/255 | {_ci(ref, 'clean')} | {_ci(c, 'robust')} "
                         f"| {_ci(g, 'robust')} | {_ci(p, 'robust')} |")
    return "\n".join(lines) + "\n"


def transfer_table(numbers: dict[str, dict]) -> str:
    lines = md.table(["crafted on", "answered by", "clean", "under its own attack", "under the transferred attack", "crafted-on model under its own attack", "transfer rate"], [])
    for name, source, target in TRANSFERS:
        t = numbers.get(name)
        rate = "not run" if not t or t.get("transfer_rate") is None else (
            f"{M.fmt_pct(t['transfer_rate'])} of {t['pool']}")
        lines.append(f"| {TITLES[source]} | {TITLES[target]} | {_ci(t, 'clean')} | {_ci(t, 'target_white_box')} "
                     f"| {_ci(t, 'robust')} | {_ci(t, 'source_robust')} | {rate} |")
    return "\n".join(lines) + "\n"


def paired_test(a: list[bool], b: list[bool]) -> str:
    """McNemar's exact test of two defenses on the same images (`a`: the stack, `b`: its best part)."""
    only_a, only_b, p = M.mcnemar_exact(a, b)
    verdict = {"helps": "does better than", "no better than": "is no better than", "worse": "does worse than"}
    return (f"McNemar's exact test on the same images: {only_a} images only the stack survives, {only_b} only "
            f"its best part, p = {p:.3g}, so the stack {verdict[M.paired_verdict(a, b)]} its best part at 5%")


def stack_rows(results: dict) -> tuple[dict | None, dict[str, dict], dict[str, tuple[float, list[bool]]]]:
    """(the stack's row, the rows of the undefended model and the stack's parts, their worst cases on the
    stack run's images: the first n of the same evaluation, so every comparison is paired)."""
    table = P.rows(P.model_results(results, "teaching")).get(("pgd", 4, "seen"), {})
    stack = next((r for r in table.values() if r.get("paradigm") == "stacked"), None)
    if stack is None:
        return None, {}, {}
    parts = [p.strip() for p in stack["title"].split(":", 1)[-1].split("+")]
    rows = {k: r for k, r in table.items() if k == "none" or r is stack or r["title"].split(" (")[0] in parts}
    worst = {}
    for name, row in rows.items():
        entries = [row] + row.get("also", [])
        worst[name] = (P.per_image_worst(entries, stack["n"])[0], _worst_ok(entries, stack["n"]))
    return stack, rows, worst


def best_part(stack: dict, worst: dict) -> str | None:
    singles = [k for k in worst if k not in ("none", stack["name"])]
    return max(singles, key=lambda k: worst[k][0]) if singles else None


def stack_table(results: dict) -> str:
    """The stack's row beside its parts' rows, every row's worst case on the stack run's images, and the
    paired test against the best single part."""
    stack, rows, worst = stack_rows(results)
    if stack is None:
        return "Not run yet.\n"
    n = stack["n"]
    lines = md.table(["defense", "paradigm", "clean", "oblivious", "adaptive", f"worst case (first {n} images)"], [])
    for name, row in rows.items():
        lines.append(f"| {row['title']} | {row['paradigm']} | {M.fmt_ci(row['clean_accuracy'], row['n'])} "
                     f"| {M.fmt_ci(row['robust_accuracy_oblivious'], row['n'])} "
                     f"| {M.fmt_ci(row.get('robust_accuracy_adaptive'), row['n'])} | {M.fmt_ci(worst[name][0], n)} |")
    text = "\n".join(lines) + "\n"
    best = best_part(stack, worst)
    if best:
        text += (f"\nBest single part on these images: {rows[best]['title']} ({M.fmt_pct(worst[best][0])}); "
                 f"the stack: {M.fmt_pct(worst[stack['name']][0])}; "
                 f"{paired_test(worst[stack['name']][1], worst[best][1])}.\n")
    return text


def _worst_ok(entries: list[dict], k: int) -> list[bool]:
    labels = entries[0]["labels"][:k]
    ok = [True] * k
    for e in entries:
        per = e["per_image"]
        for p in [per["oblivious_pred"]] + ([per["adaptive_pred"]] if "adaptive_pred" in per else []):
            ok = [o and a == y for o, a, y in zip(ok, p[:k], labels)]
    return ok


NOISE_TEXT = """Random noise of the attack's size, against the attack (Goodfellow et al., ICLR 2015): each
pixel moved by ±eps at random (a corner of the L-inf ball, the budget used to the full), or Gaussian noise
scaled to the same L2 norm, against PGD-10 at the same budget, on the undefended teaching models. The noise
runs use 500 images, the PGD-10 runs the first 200 of them (the clean column is the noise run's).
"""
TRANSFER_TEXT = """Attacks crafted on one model and answered by another (a black-box transfer attack: Papernot
et al. 2016; Liu et al., ICLR 2017): PGD-10 at 4/255 crafted on the first model, classified by the second.
The transferred images are the crafted-on model's own white-box images (same images, seeds and batches),
so the transfer rate compares like with like: among the images both models get right when clean and the
attack fools its own model, the share that fool the answering model too.
"""
STACK_TEXT = """One defense of each paradigm in one pipeline (`--defenses stack`: the input transform, then
the test-time adaptation on the robust image tower), attacked adaptively through the whole stack (each
part's own BPDA/EOT path, chained), beside its parts' rows on the same images.
"""


def section(results: dict) -> str:
    """The lessons' part of docs/results.md."""
    numbers = run_numbers(results)
    runs = [r for k, r in sorted(results.items()) if k in numbers]
    commands = "".join(f"- `{r['command']}` ({r['seconds']:.0f} s)\n" for r in runs)
    return ("## Noise is not an attack\n\n" + NOISE_TEXT + "\n" + noise_table(numbers)
            + "\n## Transfer between models\n\n" + TRANSFER_TEXT + "\n" + transfer_table(numbers)
            + "\n## The three paradigms stacked\n\n" + STACK_TEXT + "\n" + stack_table(results)
            + "\nCommands of this part (wall time, 1 thread, sharing 2 cores with other work):\n" + commands)
