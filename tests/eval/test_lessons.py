"""The lessons' tables and numbers (demo.eval.lessons), and the Learn texts' claims against the published runs."""
from __future__ import annotations

import pytest

from demo.eval import lessons as L
from demo.eval import published as P
from demo.eval.metrics import significantly_above



def _run(labels, clean, adv, name="x", key="teaching", defenses=()):
    n = len(labels)
    acc = lambda p: sum(a == y for a, y in zip(p, labels)) / n  # noqa: E731
    return {"command": f"python -m demo.eval ... --out docs/results/{name}", "seconds": 12.0,
            "model": {"key": key}, "data": {"n": n, "source": "world"},
            "attack": {"name": "pgd", "params": {"eps": 4 / 255}},
            "undefended": {"clean_accuracy": acc(clean), "robust_accuracy": acc(adv), "mean_l2": 1.0, "mean_linf": 4 / 255},
            "per_image": {"labels": labels, "clean_pred": clean, "adv_pred": adv}, "defenses": list(defenses)}


def test_transfer_rate_counts_only_images_the_source_attack_fooled():
    labels = [0, 1, 2, 3, 4]
    # The ResNet (source) is right on all clean images and fooled on images 0-3.
    source = _run(labels, [0, 1, 2, 3, 4], [9, 9, 9, 9, 4], "lesson_pgd_4")
    # The ViT is wrong on image 0 even when clean; of images 1-3 the transferred attack fools only 1.
    transfer = _run(labels, [9, 1, 2, 3, 4], [9, 9, 2, 3, 4], "transfer_resnet_to_vit", "teaching-vit")
    results = {"lesson_pgd_4": source, "transfer_resnet_to_vit": transfer}
    t = L.transfer_numbers(results, "transfer_resnet_to_vit", "teaching", "teaching-vit")
    assert t["pool"] == 3 and t["transfer_rate"] == pytest.approx(1 / 3)
    assert t["source_robust"] == pytest.approx(0.2) and t["robust"] == pytest.approx(0.6)
    assert t["target_white_box"] is None  # the ViT's own white-box run is not in this set
    numbers = L.run_numbers(results)
    assert L.fill("{{run:transfer_resnet_to_vit.transfer_rate}} of {{run:transfer_resnet_to_vit.pool}}",
                  numbers) == "33.3% of 3"
    assert L.fill("{{run:transfer_vit_to_resnet.robust}}", numbers) == "n/a"
    table = L.transfer_table(numbers)
    assert "| ResNet | ViT | 80.0% [" in table and "33.3% of 3" in table


def test_noise_table_reads_each_run():
    labels = list(range(10))
    results = {"lesson_noise_corners_4": _run(labels, labels, labels[:9] + [0]),
               "lesson_pgd_4": _run(labels, labels, [99] * 10)}
    table = L.noise_table(L.run_numbers(results))
    row = next(line for line in table.splitlines() if line.startswith("| ResNet | 4/255"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2].startswith("100.0%") and cells[3].startswith("90.0%") and cells[4] == "not run"
    assert cells[5].startswith("0.0%")


def test_fill_formats_counts_and_times():
    numbers = {"r": {"n": 200, "seconds": 61.4, "clean": 0.5}}
    assert L.fill("{{run:r.n}} in {{run:r.seconds}}, {{run:r.clean}}", numbers) == "200 in 61 s, 50.0%"


def test_paired_test_hook_says_when_it_is_missing(monkeypatch):
    monkeypatch.delattr(L.M, "mcnemar", raising=False)
    assert "pending" in L.paired_test([True], [False])
    monkeypatch.setattr(L.M, "mcnemar", lambda a, b, **kw: "p = 0.5", raising=False)
    assert L.paired_test([True], [False]) == "p = 0.5"


def _published(names):
    results = P.load()
    missing = [n for n in names if n not in results]
    if missing:
        pytest.skip(f"not published yet: {', '.join(missing)}")
    return results


@pytest.mark.parametrize("name,source,target", L.TRANSFERS)
def test_transferred_images_are_the_sources_white_box_images(name, source, target):
    """The transfer table's premise: same images, seeds and batches as the source's white-box run."""
    results = _published([name, L.WHITE_BOX[source][0]])
    t, s = results[name], results[L.WHITE_BOX[source][0]]
    n = t["data"]["n"]
    assert t["per_image"]["labels"] == s["per_image"]["labels"][:n]
    assert t["attack"]["crafted_on"] == source and t["model"]["key"] == target
    assert abs(t["undefended"]["mean_l2"] - s["undefended"]["mean_l2"]) < 1e-4
