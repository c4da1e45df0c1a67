"""`python -m demo.eval` on the tiny random CLIP: files written, numbers consistent with their definitions."""
from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
from PIL import Image

from demo.eval import metrics as M
from demo.eval.__main__ import main
from demo.eval.run import attack_params, load_world

CLASSES = ("car", "cat", "dog")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for k in range(4):
            arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / c / f"{k}.png")
    (root / "README.txt").write_text("not a class")
    return root


def _pgd_argv(tiny_dir, folder, out):
    return ["--model", f"local-dir:{tiny_dir}", "--attack", "pgd", "--eps", "32", "--alpha", "8", "--steps", "5",
            "--n", "12", "--batch-size", "5", "--data", str(folder), "--defenses", "none,tecoa", "--adaptive",
            "--out", str(out)]


def test_pgd_results_are_consistent_and_written(tiny_dir, folder, tmp_path, capsys):
    out = tmp_path / "results" / "res"
    argv = _pgd_argv(tiny_dir, folder, out)
    result = main(argv)
    printed = capsys.readouterr().out
    assert "| clean acc." in printed

    saved = json.loads((tmp_path / "results" / "res.json").read_text())
    md = (tmp_path / "results" / "res.md").read_text()
    assert saved["command"] == "python -m demo.eval " + shlex.join(argv)
    assert saved["command"] in md and "Undefended model" in md
    assert saved["data"]["n"] == 12 and saved["data"]["num_classes"] == 3
    assert saved["attack"]["params"]["eps"] == pytest.approx(32 / 255)

    u = saved["undefended"]
    per = saved["per_image"]
    labels, clean, adv = (torch.tensor(per[k]) for k in ("labels", "clean_pred", "adv_pred"))
    assert sorted(set(labels.tolist())) == [0, 1, 2] and len(labels) == 12
    assert u["clean_accuracy"] == pytest.approx(float((clean == labels).float().mean()))
    assert u["robust_accuracy"] == pytest.approx(float((adv == labels).float().mean()))
    assert u["clean_accuracy"] > 0, "the check below needs images classified right when clean"
    assert u["robust_accuracy"] <= u["clean_accuracy"]
    both = ((clean == labels) & (adv == labels)).sum().item()
    assert u["attack_success_rate"] == pytest.approx(1 - both / (clean == labels).sum().item())
    assert 0 < u["mean_linf"] <= 32 / 255 + 1e-6
    assert u["mean_l2"] > u["mean_linf"]
    assert u["passes_per_image"] == {"forward": 0.0, "grad": 5.0}
    assert u["ms_per_image"] > 0

    rows = {r["name"]: r for r in saved["defenses"]}
    none = rows["none"]
    # No defense is the undefended model: same clean accuracy, and its adaptive attack is the same attack.
    assert none["clean_accuracy"] == pytest.approx(u["clean_accuracy"])
    assert none["robust_accuracy_oblivious"] == pytest.approx(u["robust_accuracy"])
    assert none["robust_accuracy_adaptive"] == pytest.approx(u["robust_accuracy"])
    assert none["passes_per_image"] == {"forward": 1.0, "grad": 0.0}
    # The worst case counts an image as robust only if it survives both attacks, from the stored predictions.
    for row in (r for r in rows.values() if "error" not in r):
        obl, ada = (torch.tensor(row["per_image"][k]) for k in ("oblivious_pred", "adaptive_pred"))
        assert row["robust_accuracy_oblivious"] == pytest.approx(float((obl == labels).float().mean()))
        assert row["robust_accuracy_worst"] == pytest.approx(float(((obl == labels) & (ada == labels)).float().mean()))
        assert row["robust_accuracy_worst"] <= min(row["robust_accuracy_oblivious"], row["robust_accuracy_adaptive"])
    assert "error" in rows["tecoa"] and "TeCoA" in rows["tecoa"]["error"]
    assert "not run" in md

    again = main(argv)
    assert again["per_image"] == result["per_image"], "same seed, same command: same predictions"


def test_world_data_targeted(tiny_dir, tmp_path):
    result = main(["--model", f"local-dir:{tiny_dir}", "--attack", "pgd", "--eps", "16", "--steps", "2",
                   "--n", "5", "--batch-size", "2", "--data", "world", "--targeted", "--seed", "3"])
    assert result["data"]["n"] == 5 and result["data"]["num_classes"] == 64
    per = result["per_image"]
    assert len(per["target"]) == 5 and all(t != y for t, y in zip(per["target"], per["labels"]))
    hit = sum(p == t for p, t in zip(per["adv_pred"], per["target"])) / 5
    assert result["undefended"]["targeted_success_rate"] == pytest.approx(hit)
    assert result["attack"]["targeted"] is True and result["seed"] == 3
    assert result["defenses"] == []


def test_eot_draws_and_adaptive_variants_reach_the_worst_case(tiny_dir):
    result = main(["--model", f"local-dir:{tiny_dir}", "--attack", "pgd", "--eps", "8", "--steps", "2", "--n", "6",
                   "--batch-size", "3", "--defenses", "ttc,random_resize_pad,jpeg", "--adaptive", "--eot", "3"])
    rows = {r["name"]: r for r in result["defenses"]}
    assert result["eot"] == 3
    assert rows["ttc"]["eot_draws"] == 3 and rows["random_resize_pad"]["eot_draws"] == 3
    assert rows["jpeg"]["eot_draws"] is None  # deterministic: nothing to average
    variant = rows["ttc"]["adaptive_variants"]["detector-aware"]
    labels = result["per_image"]["labels"]
    survived = [all(p[i] == y for p in (rows["ttc"]["per_image"]["oblivious_pred"],
                                        rows["ttc"]["per_image"]["adaptive_pred"], variant["pred"]))
                for i, y in enumerate(labels)]
    assert rows["ttc"]["robust_accuracy_worst"] == pytest.approx(sum(survived) / len(labels))
    # JPEG is attacked through identity BPDA and through its differentiable approximation; the worst case
    # keeps, per image, the lower of the two.
    jpeg = rows["jpeg"]
    smooth = jpeg["adaptive_variants"]["differentiable JPEG"]["pred"]
    held = [all(p[i] == y for p in (jpeg["per_image"]["oblivious_pred"], jpeg["per_image"]["adaptive_pred"], smooth))
            for i, y in enumerate(labels)]
    assert jpeg["robust_accuracy_worst"] == pytest.approx(sum(held) / len(labels))
    with pytest.raises(SystemExit):
        main(["--model", f"local-dir:{tiny_dir}", "--n", "2", "--eot", "0"])


@pytest.mark.parametrize("bad", [
    ["--attack", "nope"],
    ["--attack", "cw", "--eps", "4"],          # CW has no budget parameter
    ["--attack", "pgd", "--set", "gamma=1"],
    ["--attack", "apgd_ce", "--targeted"],
    ["--defenses", "nope"],
])
def test_bad_arguments_exit_with_usage_error(bad, tiny_dir, folder):
    with pytest.raises(SystemExit) as exc:
        main(["--model", f"local-dir:{tiny_dir}", "--n", "2", "--data", str(folder)] + bad)
    assert exc.value.code == 2


def test_folder_needs_two_classes(tiny_dir, tmp_path):
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cat" / "a.png")
    with pytest.raises(SystemExit):
        main(["--model", f"local-dir:{tiny_dir}", "--n", "1", "--data", str(tmp_path / "one")])


def test_attack_params_convert_units_once():
    assert attack_params("pgd", eps=4, alpha=1, steps=3) == {"eps": 4 / 255, "alpha": 1 / 255, "steps": 3}
    assert attack_params("pgd_l2", eps=0.5, alpha=0.1) == {"eps": 0.5, "alpha": 0.1}
    assert attack_params("pgd", extra={"random_start": "false"}) == {"random_start": False}
    assert attack_params("cw", extra={"c": "10"}) == {"c": 10.0}


def test_step_size_follows_the_budget_unless_given():
    # Madry et al.'s 2.5 * eps / steps: 1/255 at the default 4/255 in 10 steps
    assert attack_params("pgd", eps=4, steps=10)["alpha"] == pytest.approx(1 / 255)
    assert attack_params("pgd", eps=1, steps=10)["alpha"] == pytest.approx(0.25 / 255)
    assert attack_params("pgd", eps=8)["alpha"] == pytest.approx(2 / 255)
    assert attack_params("pgd", eps=32, steps=1)["alpha"] == pytest.approx(16 / 255)  # capped at the field's limit
    assert attack_params("pgd", eps=1, alpha=1)["alpha"] == pytest.approx(1 / 255)
    assert "alpha" not in attack_params("fgsm", eps=4)


def test_world_images_do_not_depend_on_n():
    a, ya = load_world(130, 16, "seen")
    b, yb = load_world(30, 16, "seen")
    assert torch.equal(a[:30], b) and torch.equal(ya[:30], yb)


def test_metrics_definitions():
    labels = torch.tensor([0, 1, 2, 0])
    clean = torch.tensor([0, 1, 1, 0])   # 3 of 4 right
    adv = torch.tensor([1, 1, 2, 2])     # 1 stays right, one clean-wrong image becomes right
    assert M.accuracy(clean, labels) == 0.75
    assert M.accuracy(adv, labels) == 0.5
    assert M.attack_success_rate(clean, adv, labels) == pytest.approx(2 / 3)
    logits = torch.nn.functional.one_hot(adv, 3).float()
    assert M.accuracy(logits, labels) == 0.5
    assert M.targeted_success_rate(adv, torch.tensor([1, 1, 2, 2]), labels) == pytest.approx(1.0)
    assert M.targeted_success_rate(adv, torch.tensor([1, 0, 0, 0]), labels) == pytest.approx(1 / 3)  # last: label is target
    delta = torch.zeros(2, 3, 2, 2)
    delta[0, 0, 0, 0] = 0.5
    delta[1] = 0.1
    assert M.mean_linf(delta) == pytest.approx(0.3)
    assert M.mean_l2(delta) == pytest.approx((0.5 + (12 * 0.01) ** 0.5) / 2)
    assert math.isnan(M.attack_success_rate(torch.tensor([1]), torch.tensor([1]), torch.tensor([0])))


def test_worst_case_and_the_weak_adaptive_attack_flag():
    from demo.eval import metrics as M

    labels = torch.tensor([0, 1, 2, 0])
    a = torch.tensor([0, 1, 0, 0])  # right on 0, 1, 3
    b = torch.tensor([0, 2, 2, 0])  # right on 0, 2, 3
    assert M.worst_case_accuracy([a, b], labels) == pytest.approx(0.5)  # only 0 and 3 survive both
    assert M.significantly_above(0.43, 0.076, 500) and not M.significantly_above(0.152, 0.148, 500)
    lo, hi = M.wilson_interval(0.076, 500)
    assert lo == pytest.approx(0.056, abs=1e-3) and hi == pytest.approx(0.103, abs=1e-3)
    assert M.wilson_interval(0.0, 10)[0] == 0.0 and 0 < M.wilson_interval(0.0, 10)[1] < 0.35
