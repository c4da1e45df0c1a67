"""The two teaching models side by side: the same world, the same text tower, a ResNet or a ViT image tower.

Runs of the ViT teaching model are published under the same names as the ResNet model's with a `vit_`
prefix (`demo.eval.runs`); `model_results` strips it, so every table and number of `published` works on
either model's runs.
"""
from __future__ import annotations

from .publish import markdown as md, published as P
from .metrics import fmt_ci
from .publish.published import PREFIXES, model_results

TITLES = {"teaching": "ResNet", "teaching-vit": "ViT"}

INTRO = """Both teaching models see the same world through the same text tower (the ViT was trained against
the ResNet model's frozen text tower), so what changes between the columns is the image tower alone: the
ResNet's convolutions and batch norm, or the ViT's 16-pixel patch tokens and attention, the architecture of
the CLIPs people use. Every row was attacked the same way on both (PGD-10 at 4/255, oblivious and adaptive;
worst case = an image counts only if it survives both; AutoAttack where the row says so). The last two
columns are the leaderboard's number: every attack run on the row counted image by image, the protocol for
randomized defenses included, on the images all of them covered (n says how many). TAPT and FAP prompt the
image tokens, so they have no ResNet entry.
"""



def _cell(d: dict | None, key: str, field: str = "worst") -> str:
    entry = (d or {}).get(key) or {}
    value = entry.get(field)
    return "not run" if value is None else fmt_ci(value, entry["n"])


def side_by_side(results: dict[str, dict]) -> str:
    """A row per defense: clean and worst case on seen and held-out classes, ResNet then ViT."""
    numbers = {m: P.defense_numbers(model_results(results, m)) for m in PREFIXES}
    if not numbers["teaching-vit"]:
        return ("The ViT teaching model's runs have no results yet (`python -m demo.eval.suite status` shows "
                "how far they are).\n")
    names = list(dict.fromkeys(list(numbers["teaching"]) + list(numbers["teaching-vit"])))
    head = [f"{TITLES[m]} {what}" for what in ("clean (seen)", "worst case (seen)", "worst case (held-out)")
            for m in PREFIXES]
    rows = []
    for name in names:
        ds = [numbers[m].get(name) for m in PREFIXES]
        first = next(d for d in ds if d)
        rows.append([first["title"], first["paradigm"]] + [_cell(d, "seen", "clean") for d in ds]
                    + [_cell(d, "seen") for d in ds] + [_cell(d, "held_out") for d in ds] + [_cell(d, "aa4") for d in ds]
                    + [_cell(d, "board") + (f", n={d['board']['n']}" if d and d.get("board") else "") for d in ds])
    return md.text(["defense", "paradigm", *head, "AutoAttack 4/255 (seen), ResNet", "ViT",
                    "every attack per image (seen), ResNet", "ViT"], rows)


PROBE_TEXT = """**Why the ViT names held-out pairs less often.** Linear probes learn to read the shape (or the colour)
from one stage of each image tower, trained on images of seen pairs only, and are tested on images of the
held-out pairs, whose colour and shape the towers never saw together. Colour is read at every stage of both
towers (at least {colour_min} on held-out pairs). The shape of a held-out pair is read from the ResNet's image
embedding {resnet} of the time and from the ViT's {vit}: the ViT's features tie a shape to the colours it was
seen in more than the ResNet's, and where they do it names a held-out pair by a seen shape of the right
colour; the ResNet's deep features keep more of the shape apart from the colour. Probe accuracy is not
zero-shot accuracy (that reads the embedding with the text tower's class prompts), but both rank the two
towers the same way.

"""


def probe_section(results: dict[str, dict]) -> str:
    """The shape-probe finding and its table, from docs/results/shape_probe.json; '' before it is run."""
    from .probe import table

    probe = results.get("shape_probe")
    if not probe:
        return ""
    models, n = probe["models"], probe["n_test"]
    colour = min(s["colour_held_out"] for r in models.values() for s in r["stages"])
    last = {m: r["stages"][-1]["shape_held_out"] for m, r in models.items()}
    return (PROBE_TEXT.format(colour_min=f"{100 * colour:.1f}%", resnet=fmt_ci(last["teaching"], n),
                              vit=fmt_ci(last["teaching-vit"], n))
            + f"`{probe['command']}` ({probe['n_train']} seen images to learn from, {n} test images per split):\n\n"
            + table(probe) + _pairs(probe))


def _pairs(probe: dict) -> str:
    from .probe import gap_table, pair_table

    models = probe["models"].values()
    out = ""
    if all("held_out_pairs" in r for r in models):
        out += ("\nZero-shot answers on the same held-out test images, pair by pair (the class prompts of all 64 "
                "pairs, as the evaluation reads them): a tower can compose most pairs and still miss one.\n\n"
                + pair_table(probe))
    if all("hue_gap" in r for r in models):
        out += ("\nEach shape drawn in off-palette colours and named by the 8 shape prompts alone: at the hue of "
                "the colour it is held out in (inside the gap that off-palette training images, `--shape-hues`, "
                "leave around it) and at the hues they may use. A tower that reads shape apart from hue names it "
                "in the gap too; one that learned each shape hue by hue does not.\n\n" + gap_table(probe))
    return out
