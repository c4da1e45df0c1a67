"""The published results: one source for docs/results.md, docs/leaderboard.md and the Learn tab."""
from __future__ import annotations

import re

import pytest

from demo.eval.publish import published as P
from demo.eval.publish import tables
from demo.eval.__main__ import main
from demo.ui import assets


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs under the published names: PGD seen and held-out, and AutoAttack."""
    folder = tmp_path_factory.mktemp("results")
    common = ["--model", "teaching", "--n", "6", "--batch-size", "3", "--adaptive"]
    main(common + ["--attack", "pgd", "--eps", "2", "--steps", "2", "--defenses", "none,jpeg,fare",
                   "--out", str(folder / "pgd4_main_seen")])
    main(common + ["--attack", "pgd", "--eps", "2", "--steps", "2", "--defenses", "none,jpeg,fare",
                   "--data", "world-held-out", "--out", str(folder / "pgd4_main_held_out")])
    main(common + ["--attack", "autoattack", "--eps", "2", "--set", "steps=2", "--set", "targets=2",
                   "--defenses", "fare", "--out", str(folder / "aa4_training_time_seen")])
    return folder


def test_numbers_per_defense_and_the_per_image_worst_case(runs):
    results = P.load(runs)
    numbers = P.defense_numbers(results)
    assert set(numbers) == {"none", "jpeg", "fare"}
    assert numbers["none"]["paradigm"] == "none"
    fare = numbers["fare"]
    assert {"seen", "held_out", "aa4"} <= set(fare)
    pgd = results["pgd4_main_seen"]["defenses"][2]
    aa = results["aa4_training_time_seen"]["defenses"][0]
    labels = pgd["per_image"] and results["pgd4_main_seen"]["per_image"]["labels"]
    alive = [all(p[i] == y for p in (pgd["per_image"]["oblivious_pred"], pgd["per_image"]["adaptive_pred"],
                                      aa["per_image"]["oblivious_pred"], aa["per_image"]["adaptive_pred"]))
             for i, y in enumerate(labels)]
    assert fare["leaderboard_worst"] == pytest.approx(sum(alive) / len(alive))
    assert fare["leaderboard_attacks"] == ["aa4", "pgd4"]
    assert numbers["jpeg"]["leaderboard_attacks"] == ["pgd4"]


def test_reports_are_generated_from_the_runs(runs, tmp_path):
    tables.write_all(runs, tmp_path)
    text = (tmp_path / "results.md").read_text()
    board = (tmp_path / "leaderboard.md").read_text()
    results = P.load(runs)
    assert results["pgd4_main_seen"]["command"] in text  # each table with its exact command
    assert "## PGD-10 at 4/255, held-out classes (zero-shot)" in text and "Sanity checks" in text
    ranks = [line for line in board.splitlines() if re.match(r"\| \d", line)]
    worst = [float(re.search(r"\| ([\d.]+)% \[", line)[1]) for line in ranks]
    assert len(ranks) == 3 and worst == sorted(worst, reverse=True)
    # JPEG has only PGD-10: an upper bound, marked and named; FARE was also attacked with AutoAttack
    assert "n=6 †" in next(line for line in ranks if "JPEG" in line)
    assert "†" not in next(line for line in ranks if "FARE" in line)
    assert "The † rows: JPEG compression." in " ".join(board.split())
    assert "Rows: the undefended model, FARE (training-time)." in text


def test_the_dagger_and_its_paragraph_go_once_every_row_has_autoattack(runs, tmp_path):
    import shutil

    folder = tmp_path / "results"
    shutil.copytree(runs, folder)
    main(["--model", "teaching", "--n", "6", "--batch-size", "3", "--adaptive", "--attack", "autoattack",
          "--eps", "2", "--set", "steps=2", "--set", "targets=2", "--defenses", "jpeg",
          "--out", str(folder / "aa4_training_free_seen")])
    tables.write_all(folder, tmp_path)
    board = (tmp_path / "leaderboard.md").read_text()
    assert "†" not in board and "Not yet attacked" not in board
    assert "AutoAttack, oblivious and adaptive, too for every row" in " ".join(board.split())
    ranks = [line for line in board.splitlines() if re.match(r"\| \d", line)]
    assert len(ranks) == 3 and all("AutoAttack" in line for line in ranks)


def test_fill_quotes_the_results_and_says_when_missing():
    numbers = {"ttc": {"seen": {"worst": 0.094}}}
    assert P.fill("TTC {{ttc.seen.worst}}, R-TPT {{rtpt.seen.worst}}", numbers) == "TTC 9.4%, R-TPT n/a"


def test_fill_quotes_the_vit_teaching_model_by_prefix():
    from demo.eval.publish.published import model_results

    vit = P.defense_numbers(model_results(P.load(), "teaching-vit"))["tecoa"]["seen"]
    resnet = {"tecoa": {"seen": {"clean": 0.5}}}
    text = P.fill("ResNet {{tecoa.seen.clean}}, ViT {{vit:tecoa.seen.clean}} of {{vit:tecoa.seen.n}}", resnet)
    assert text == f"ResNet 50.0%, ViT {100 * vit['clean']:.1f}% of {vit['n']}"
    assert P.fill("{{nomodel:tecoa.seen.clean}}", resnet) == "n/a"


def test_every_number_the_learn_tab_quotes_is_published():
    numbers = P.defense_numbers()
    for name in ("training_time", "test_time", "training_free", "adaptive", "walkthrough"):
        text = assets.content(name)
        for token in re.findall(r"\{\{[^}]*\}\}", text):
            assert P.fill(token, numbers) != "n/a", f"{name}.md quotes {token}, which docs/results/ does not hold"


def test_the_learn_tabs_comparisons_hold_in_the_published_numbers():
    from demo.eval.publish.published import model_results

    vit = P.defense_numbers(model_results(P.load(), "teaching-vit"))
    text = " ".join(assets.content("test_time").split())
    assert "right through its adaptation, no better than the undefended ViT's {{vit:none.pgd1.worst}}" in text
    assert vit["tapt"]["pgd1"]["worst"] <= vit["none"]["pgd1"]["worst"]
    assert vit["tapt"]["pgd1"]["clean"] < vit["none"]["pgd1"]["clean"]
    # "The ordering holds on both teaching models": R-TPT above TPT, TPT not below the undefended model
    assert "The ordering holds on both teaching models" in text
    resnet = P.defense_numbers()
    for numbers in (resnet, vit):
        assert numbers["rtpt"]["seen"]["worst"] > numbers["tpt"]["seen"]["worst"] >= numbers["none"]["seen"]["worst"]


def test_the_readme_quotes_the_published_evaluation():
    from pathlib import Path

    numbers = P.defense_numbers()["none"]
    text = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    quoted = re.search(r"the teaching model scores ([\d.]+)% on seen pairs and ([\d.]+)% on held-out pairs, "
                       r"and keeps ([\d.]+)% under the attack", text)
    assert quoted, "the README no longer quotes the published evaluation"
    published = (numbers["seen"]["clean"], numbers["held_out"]["clean"], numbers["seen"]["worst"])
    assert [float(q) for q in quoted.groups()] == [round(100 * v, 1) for v in published]


def test_two_autoattack_runs_of_one_defense_both_count(runs, tmp_path):
    """AutoAttack at two EOT draw counts (or any two runs of one defense): the row shows the lower, the
    per-image worst case counts both, and the EOT text names both counts."""
    import shutil

    folder = tmp_path / "results"
    shutil.copytree(runs, folder)
    common = ["--model", "teaching", "--n", "6", "--batch-size", "3", "--adaptive", "--attack", "autoattack",
              "--eps", "2", "--set", "steps=2", "--set", "targets=2", "--defenses", "random_resize_pad"]
    main(common + ["--eot", "1", "--out", str(folder / "aa4_rrp_seen")])
    main(common + ["--eot", "2", "--out", str(folder / "aa4_rrp2_seen")])
    results = P.load(folder)
    table = P.rows(results)[("aa", 4, "seen")]
    row = table["random_resize_pad"]
    worsts = sorted(r["defenses"][0]["robust_accuracy_worst"] for k, r in results.items() if "rrp" in k)
    assert row["robust_accuracy_worst"] == worsts[0] and len(row["also"]) == 1
    assert {row["run"], row["also"][0]["run"]} == {"aa4_rrp_seen", "aa4_rrp2_seen"}
    number = P.defense_numbers(results)["random_resize_pad"]
    expected, _ = P.per_image_worst([row, row["also"][0]])
    assert number["leaderboard_worst"] <= expected <= worsts[0]
    text = tables.aa_eot_text(P.rows(results))
    assert "at 1 draws" in text and "at 2 draws" in text and "survives both" in text
    assert f"{tables.fmt_ci(expected, 6)} of the 6 images do" in text  # the per-image count over both runs
    # The held-out worst case of the leaderboard counts every held-out attack, with its n.
    assert P.defense_numbers(results)["fare"]["leaderboard_held_out_n"] == 6
