"""The protocol's tables: EOT curves compared by McNemar, partial runs said as such, the leaderboard entry."""
import json

from demo.eval.publish import protocol_tables as T
from demo.eval.publish import published as P, tables
from demo.eval import randomized as R


def fake(k: int, adaptive: list[int], start: int = 0, clean: list[int] | None = None, draws: int = 10) -> dict:
    n = len(adaptive)
    res = {"protocol": "randomized", "model": "teaching",
           "defense": {"name": "random_resize_pad", "title": "Random resize & pad", "paradigm": "training-free",
                       "randomized": True, "options": {}},
           "data": {"source": "world", "n": n, "start": start},
           "attack": {"name": "eot-pgd", "title": "EOT-PGD-20 (best point)", "eps": 4 / 255, "alpha": 0.5 / 255,
                      "steps": 20, "eot": k},
           "score_draws": draws, "seed": 0, "batch_size": 10, "transfer": False, "surrogate": None, "attacked": True,
           "labels": [0] * n, "adaptive_right": adaptive, "best_loss": [1.0] * n,
           "loss_curve": [float(n) * (1 + i / 20) for i in range(21)], "seconds": 1.0, "command": f"cmd {k}"}
    if clean:
        res["clean_right"] = clean
    return res


def write(folder, name, res):
    (folder / f"{name}.json").write_text(json.dumps(res))


def test_curve_flattens_where_mcnemar_finds_no_difference(tmp_path):
    # 1 -> 2 draws: 12 images lose their last right draw (McNemar p < 0.001); 2 -> 4: one more image.
    ones = [10] * 30 + [3] * 70
    twos = [10] * 18 + [3] * 82
    fours = [10] * 17 + [3] * 83
    for k, r in ((1, ones), (2, twos), (4, fours)):
        write(tmp_path, f"rand_rrp_eot{k}_seen", fake(k, r))
    runs = T.load(tmp_path)
    k, sentence = T.flattened(T.curve(runs, "rrp"))
    assert k == 2 and "McNemar 1 vs 0" in sentence
    table = T.eot_curve_table(runs, "rrp")
    assert "| 2 | 100 | " in table and "lower (p = 0.00, n=100)" in table and "no different (p = 1.00" in table
    e = T.reached(runs, "rrp")
    assert (e["draws_reached"], e["flat_at"], e["at"], e["all"]) == (4, 2, 4, 0.17)
    assert e["mean"] > e["all"]  # the ranked number is the lower one


def test_still_falling_is_said(tmp_path):
    write(tmp_path, "rand_rrp_eot1_seen", fake(1, [10] * 40 + [0] * 60))
    write(tmp_path, "rand_rrp_eot2_seen", fake(2, [10] * 20 + [0] * 80))
    k, sentence = T.flattened(T.curve(T.load(tmp_path), "rrp"))
    assert k is None and "still falling at 2 draws" in sentence
    assert "more iterations may lower" in T.eot_curve_table(T.load(tmp_path), "rrp")  # the loss still rose


def test_a_run_under_way_counts_its_leading_shards_and_says_how_far(tmp_path):
    shards = tmp_path / "shards" / "rand_rrp_eot1_seen"
    shards.mkdir(parents=True)
    (shards / "00000.json").write_text(json.dumps(fake(1, [10] * 20, clean=[10] * 20)))
    (shards / "00040.json").write_text(json.dumps(fake(1, [0] * 20, start=40)))  # after a gap: not counted
    runs = T.load(tmp_path)
    res = runs["rand_rrp_eot1_seen"]
    assert (res["done"], res["total"], len(res["labels"])) == (20, 100, 20)
    assert "(20 of 100 images so far)" in T.leaderboard_section(runs)


def test_summary_of_a_merged_run(tmp_path):
    merged = R.merge([fake(1, [10, 9, 0], clean=[10, 10, 10]), fake(1, [10], start=3, clean=[5])])
    s = R.summary(merged)
    assert s["adaptive"] == {"mean": 29 / 40, "all": 0.5} and s["clean"] == {"mean": 35 / 40, "all": 0.75}


def test_survivors_count_every_attack_and_variant_per_image():
    a = {"labels": [0, 1, 2, 3], "per_image": {"oblivious_pred": [0, 1, 2, 0], "adaptive_pred": [0, 1, 9, 3]},
         "adaptive_variants": {"v": {"pred": [0, 9, 2, 3]}}}
    b = {"labels": [0, 1, 2], "per_image": {"oblivious_pred": [5, 1, 2]}}
    labels, ok = P.per_image_survivors([a, b])
    assert labels == [0, 1, 2] and ok == [False, False, False]
    assert P.per_image_survivors([a])[1] == [True, False, False, False]


def test_a_slowly_falling_curve_is_not_called_flat_at_its_start(tmp_path):
    # 15%, 14%, 12%, 9%, 7%: every neighbouring pair within noise, the fall from 1 to 16 draws not
    for k, right in ((1, 15), (2, 14), (4, 12), (8, 9), (16, 7)):
        write(tmp_path, f"rand_rrp_eot{k}_seen", fake(k, [10] * right + [0] * (100 - right)))
    k, sentence = T.flattened(T.curve(T.load(tmp_path), "rrp"))
    assert k == 4 and "from 4 draws on" in sentence  # 1 and 2 draws are above 16 by McNemar, 4 is not
    assert T.reached(T.load(tmp_path), "rrp")["all"] == 0.07  # ranked by the lowest count


def test_vit_protocol_runs_form_their_own_curve(tmp_path):
    write(tmp_path, "rand_rrp_eot1_seen", fake(1, [10] * 50 + [0] * 50))
    write(tmp_path, "vit_rand_rrp_eot1_seen", fake(1, [10] * 20 + [0] * 80))
    runs = T.load(tmp_path)
    assert [r["adaptive_right"][:1] for _, r in T.curve(runs, "rrp")] == [[10]]
    assert T.reached(runs, "rrp", prefix="vit_")["all"] == 0.2
    section = T.leaderboard_section(runs)
    assert "| ViT | Random resize & pad |" in section and "| ResNet | Random resize & pad |" in section


def test_a_curve_at_zero_is_flat_there(tmp_path):
    write(tmp_path, "rand_tpt_eot1_seen", fake(1, [0] * 20 + [9] * 10))
    k, sentence = T.flattened(T.curve(T.load(tmp_path), "tpt"))
    assert k == 1 and "no image is right on every draw (30 images)" in sentence
    write(tmp_path, "rand_tpt_eot1_seen", fake(1, [10] + [0] * 29))
    assert T.flattened(T.curve(T.load(tmp_path), "tpt"))[0] is None  # one image left: a second count is needed


def test_tapt_has_a_vit_curve_and_no_resnet_placeholder(tmp_path):
    tapt = fake(1, [10] * 3 + [4] * 7)
    tapt["defense"] |= {"name": "tapt", "title": "TAPT (test-time adversarial prompt tuning)"}
    write(tmp_path, "vit_rand_tapt_eot1_seen", tapt)
    runs = T.load(tmp_path)
    assert "| ViT | TAPT (test-time adversarial prompt tuning) |" in T.leaderboard_section(runs)
    text = T.results_section(tmp_path)
    assert "ViT, TAPT (test-time adversarial prompt tuning): EOT-PGD-20" in text
    assert "ResNet, TAPT" not in text  # its starting prompts exist for the ViT only


def test_a_part_done_strong_attack_says_how_far_beside_its_number(tmp_path):
    write(tmp_path, "rand_rtpt_eot1_seen", fake(1, [10] * 6 + [0] * 24))
    shards = tmp_path / "shards" / "rand_rtpt_apgd_eot1_seen"
    shards.mkdir(parents=True)
    (shards / "00000.json").write_text(json.dumps(fake(1, [10] * 1 + [0] * 9)))
    runs = T.load(tmp_path)
    e = T.reached(runs, "rtpt")
    assert e["all"] == 0.1 and e["at_state"] == "; 10 of 30 images so far"
    assert "10.0% [1.8, 40.4] (at 1 draw; 10 of 30 images so far)" in T.leaderboard_section(runs)


def _row(name: str, labels: list[int], adaptive: list[int]) -> dict:
    return {"name": name, "title": name, "paradigm": "training-free", "randomized": True, "clean_accuracy": 1.0,
            "robust_accuracy_oblivious": 1.0, "robust_accuracy_adaptive": 0.5, "robust_accuracy_worst": 0.5,
            "per_image": {"clean_pred": labels, "oblivious_pred": labels, "adaptive_pred": adaptive}}


def _eval_run(labels: list[int], rows: list[dict]) -> dict:
    return {"data": {"source": "world", "n": len(labels)},
            "per_image": {"labels": labels, "clean_pred": labels, "adv_pred": [1] * len(labels)},
            "undefended": {"clean_accuracy": 1.0, "robust_accuracy": 0.0}, "defenses": rows, "seconds": 1.0}


def test_the_protocol_counts_in_the_leaderboard_worst_case_on_the_images_it_covered():
    labels = [0] * 40
    results = {"pgd4_counter_seen": _eval_run(labels, [_row("random_resize_pad", labels, [0] * 30 + [1] * 10)])}
    base = P.defense_numbers(results)["random_resize_pad"]
    assert (base["leaderboard_worst"], base["leaderboard_n"]) == (0.75, 40)
    # the protocol on the first 20 images: 12 right on every draw, but image 19 also falls to the transfer
    run = fake(4, [10] * 12 + [9] * 8, draws=10)
    run["labels"], run["transfer_right"] = [0] * 20, [10] * 19 + [3]
    results["rand_rrp_eot4_seen"] = run
    results["rand_rrp_tuned_eot1_seen"] = {**run, "adaptive_right": [0] * 20}  # a variant: not the method
    d = P.defense_numbers(results)["random_resize_pad"]
    assert (d["leaderboard_worst"], d["leaderboard_n"]) == (12 / 20, 20)
    assert d["leaderboard_protocol"] == {"eot_draws": 4, "strong": False, "score_draws": 10, "n": 20,
                                         "without": (0.75, 40)}
    assert d["board"] == {"worst": 0.6, "n": 20} and "rand" in d["leaderboard_attacks"]
    assert "protocol for randomized defenses (EOT up to 4 draws, each" in tables.leaderboard(P.defense_numbers(results))
    results["rand_rrp_apgd_eot4_seen"] = run  # the strong attack at the flat count is named when it ran
    assert "(EOT up to 4 draws and EOT-APGD at the flat count, each" in tables.leaderboard(P.defense_numbers(results))


def test_ties_are_decided_by_mcnemar_on_shared_images():
    labels = [0] * 100
    # 30% vs 18% on the same images, the 18 inside the 30: McNemar 12 vs 0, p < 0.001 -> not tied
    above = {"leaderboard_survivors": (labels, [True] * 30 + [False] * 70), "leaderboard_worst": 0.3, "leaderboard_n": 100}
    below = {"leaderboard_survivors": (labels, [True] * 18 + [False] * 82), "leaderboard_worst": 0.18, "leaderboard_n": 100}
    assert not tables.tied_with_above(above, below)
    # 30% vs 24% with their survivors on different images: 30 vs 24 discordant, p = 0.5 -> tied
    other = {"leaderboard_survivors": (labels, [False] * 30 + [True] * 24 + [False] * 46), "leaderboard_worst": 0.24,
             "leaderboard_n": 100}
    assert tables.tied_with_above(above, other)


def test_protocol_runs_fill_run_tokens_and_the_defense_protocol_tokens():
    from demo.eval.publish import lessons

    run = fake(2, [10] * 3 + [7])
    run["clean_right"] = [10, 10, 10, 9]
    filled = lessons.fill("{{run:r.robust}} {{run:r.robust_mean}} {{run:r.clean}} {{run:r.draws}} {{run:r.eot}}",
                          {"r": lessons.protocol_numbers(run)})
    assert filled == "75.0% 92.5% 75.0% 10 2"
    labels = [0] * 4
    results = {"pgd4_counter_seen": _eval_run(labels, [_row("random_resize_pad", labels, [0] * 4)]),
               "rand_rrp_eot1_seen": {**fake(1, [10] * 4), "labels": labels},
               "rand_rrp_eot2_seen": {**run, "labels": labels}}
    numbers = P.defense_numbers(results)
    assert numbers["random_resize_pad"]["protocol"] == {"worst": 0.75, "n": 4, "eot": 2, "draws": 10, "reached": 2}
    text = P.fill("{{random_resize_pad.protocol.worst}} at {{random_resize_pad.protocol.eot}} of "
                  "{{random_resize_pad.protocol.reached}}", numbers)
    assert text == "75.0% at 2 of 2"
    # the strong attack at the flat count has tokens of its own; the sweep's stay the PGD curve's
    strong = {**fake(1, [10, 0, 0, 0]), "labels": labels}
    numbers = P.defense_numbers({**results, "rand_rrp_apgd_eot1_seen": strong})
    assert numbers["random_resize_pad"]["protocol"]["worst"] == 0.75
    assert numbers["random_resize_pad"]["strong"] == {"worst": 0.25, "n": 4, "eot": 1, "draws": 10, "reached": 1}
    assert numbers["random_resize_pad"]["board"]["worst"] == 0.25  # the row counts both families per image


def test_tapt_table_shows_the_attack_through_its_adaptation_beside_its_starting_prompts(tmp_path):
    start = fake(1, [10, 0, 0, 0], clean=[10, 10, 10, 0])
    results = {"vit_pgd1_tapt_seen": {"data": {"n": 4}, "defenses": [
        {"name": "tapt", "clean_accuracy": 0.75, "robust_accuracy_worst": 0.25}]}}
    table = T.tapt_section({"rand_tapt_start_seen": start}, results)
    assert "the starting prompts alone" in table and "25.0% [" in table.splitlines()[-1]
    assert "then TAPT adapts" in table and "not run yet" in table  # the handed-over attack is not run here


def test_decomposition_says_which_variant_is_above_by_mcnemar():
    full = fake(1, [10] * 10 + [0] * 20)
    runs = {"rand_rtpt_eot1_seen": full, "rand_rtpt_tuned_eot1_seen": fake(1, [10] * 1 + [0] * 29),
            "rand_rtpt_vote_eot1_seen": fake(1, [10] * 9 + [0] * 21)}
    text = T.rtpt_decomposition(runs)
    assert "full R-TPT is above the tuned prompt alone" in text  # 9 vs 0 discordant images
    assert "full R-TPT is tied with the untuned prompt" in text   # 1 vs 0


def test_the_strong_attack_is_said_to_run_at_the_flat_count(tmp_path):
    write(tmp_path, "rand_rtpt_apgd_eot1_seen", fake(1, [10] * 5 + [0] * 25))
    text = T.eot_curve_table(T.load(tmp_path), "rtpt_apgd")
    assert "run at the count where the PGD curve flattened (1 draw)" in text and "no second point" not in text
