"""The ResNet/ViT table reads each model's own runs: `vit_` runs never leak into the ResNet tables."""
from demo.eval import architectures as A
from demo.eval.publish import published as P


def test_side_by_side_reads_each_model_from_its_own_runs():
    results = A.model_results(P.load(), "teaching")  # the published ResNet runs only
    resnet = A.model_results(results, "teaching")
    assert resnet and not any(k.startswith("vit_") for k in resnet)
    # pretend the ViT model was evaluated: its runs are the ResNet runs with every accuracy halved
    vit = {}
    for k in ("pgd4_main_seen", "pgd4_main_held_out"):
        run = results[k]
        rows = [{**r, "clean_accuracy": r["clean_accuracy"] / 2} for r in run["defenses"]]
        vit[f"vit_{k}"] = {**run, "defenses": rows}
    table = A.side_by_side(results | vit)
    none = next(line for line in table.splitlines() if line.startswith("| None"))
    cells = [c.strip() for c in none.strip("|").split("|")]
    resnet_clean = P.defense_numbers(resnet)["none"]["seen"]["clean"]
    assert cells[2].startswith(f"{100 * resnet_clean:.1f}%") and cells[3].startswith(f"{50 * resnet_clean:.1f}%")
    assert "TAPT" not in table or "not run" in table
    # the last two columns are each model's leaderboard number (every attack per image)
    board = P.defense_numbers(resnet)["none"]["board"]
    assert cells[-2].startswith(f"{100 * board['worst']:.1f}%") and cells[-2].endswith(f"n={board['n']}")
    assert A.model_results(results | vit, "teaching-vit").keys() == {"pgd4_main_seen", "pgd4_main_held_out"}
    assert "no results yet" in A.side_by_side(results)
