"""The benchmark command on the tiny model (quick budget) and the load test's result comparison."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch


@pytest.fixture()
def restore_registries():
    """The benchmark registers stand-in twins and prompts in process-wide tables; put them back afterwards."""
    from demo.defenses.test_time import tapt
    from demo.defenses.training_time import apt, fap
    from demo.models.zoo import ZOO

    tables = (ZOO, apt.PROMPTS, fap.PROMPTS, tapt.ASSETS)
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


def test_quick_bench_table_is_consistent(tiny_dir, tmp_path, restore_registries):
    from demo.attacks import ATTACKS
    from demo.bench.__main__ import main
    from demo.defenses import DEFENSES

    out = tmp_path / "docs" / "benchmarks.md"
    results = main(["--models", f"local-dir:{tiny_dir}", "--devices", "cpu", "--quick", "--no-probes",
                    "--out", str(out), "--workdir", str(tmp_path / "work")])
    (run,) = results["runs"]
    assert "error" not in run
    single = run["single_pass"]
    assert 0 < single["forward_ms"] < math.inf and 0 < single["grad_ms"] < math.inf

    assert [r["name"] for r in run["attacks"]] == ATTACKS.names()
    assert [r["name"] for r in run["defenses"]] == DEFENSES.names()
    for row in run["attacks"] + run["defenses"]:
        assert row["error"] is None, row
        assert row["ms_per_image"] > 0 and row["expected_ms"] > 0
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        assert row["forward"] + row["grad"] > 0
        ref = row["reference"]  # single passes timed alongside the row's own runs
        assert ref["samples"] == results["runs"][0]["repeats"] and ref["forward_ms"] > 0 and ref["grad_ms"] > 0
        assert row["expected_ms"] == pytest.approx(row["forward"] * ref["forward_ms"] + row["grad"] * ref["grad_ms"])
        paired = [m / (row["forward"] * f + row["grad"] * g)
                  for m, f, g in zip(row["samples_ms_per_image"], ref["forward_samples"], ref["grad_samples"])]
        assert row["ratio"] == pytest.approx(sorted(paired)[len(paired) // 2])  # one run each in --quick

    for name in ("pgd", "pgd_l2"):  # one forward+backward per step, nothing else
        row = next(r for r in run["attacks"] if r["name"] == name)
        assert row["grad"] == ATTACKS.get(name)().steps and row["forward"] == 0
    fgsm = next(r for r in run["attacks"] if r["name"] == "fgsm")
    assert (fgsm["forward"], fgsm["grad"]) == (0, 1)

    comparison = run["comparison"]
    assert "error" not in comparison and comparison["ms"] > 0
    assert set(comparison["defenses"]) == {"training-time", "test-time", "training-free"}
    attack_stage = next(s for s in comparison["stages"] if s["stage"].startswith("attack"))
    assert attack_stage["grad"] == 10  # the app's default PGD-10

    text = out.read_text()
    assert "## Machine" in text and f"with {torch.get_num_threads()} threads" in text
    assert "| pgd |" in text and "| tpt |" in text and "Full comparison" in text
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["runs"][0]["attacks"][1]["name"] == run["attacks"][1]["name"]


def test_random_weights_go_through_the_loader(tiny_dir, tmp_path, restore_registries):
    """`random:ARCH` saves seeded random checkpoints and loads them like real weights, twins included."""
    import open_clip

    from demo.bench.stand_ins import checkpoint_id, prepare
    from demo.models.loading import load_image_tower, load_model
    from demo.models.zoo import ZOO

    model_cfg = json.loads((tiny_dir / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "bench-tiny-arch.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(tmp_path / "bench-tiny-arch.json")
    key, notes = prepare("random:bench-tiny-arch", tmp_path)
    assert key == "random:bench-tiny-arch" and notes
    base = load_model(key, "cpu")
    twins = [load_image_tower(ZOO[key].twins[w], "cpu") for w in ("tecoa", "fare")]
    weights = [base.clip.visual.conv1.weight] + [t.conv1.weight for t in twins]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert checkpoint_id(key, tmp_path).startswith("bench-tiny-arch=")
    again = load_model(checkpoint_id(key, tmp_path), "cpu")  # what a fresh process (cold start) loads
    assert torch.equal(again.clip.visual.conv1.weight, weights[0])


def test_prompt_methods_get_stand_ins_on_a_vit_and_are_not_available_on_a_resnet(tiny_model, teaching_model,
                                                                                   tmp_path, restore_registries):
    """TAPT and FAP rows measure untrained prompts of the right shapes on a ViT without its own; on a
    ModifiedResNet the report says they are not available, not that they failed."""
    from demo.bench.stand_ins import ensure_visual_prompts
    from demo.bench.writeup import _why_not
    from demo.defenses import DEFENSES
    from demo.defenses.base import DefenseError
    from demo.defenses.test_time import tapt
    from demo.defenses.training_time import fap

    clf = tiny_model.classifier(["cat", "dog"])
    tapt.ASSETS.pop(clf.model_key, None)
    fap.PROMPTS.pop(clf.model_key, None)
    notes = ensure_visual_prompts(clf, tmp_path)
    assert [n.split(":")[0] for n in notes] == ["TAPT", "FAP"]
    images = torch.rand(1, 3, 32, 32)
    for name in ("tapt", "fap"):
        pred = DEFENSES.create(name).predict(clf, images, seed=0)
        assert pred.logits.shape == (1, 2) and torch.isfinite(pred.logits).all()
    assert ensure_visual_prompts(clf, tmp_path) == []  # registered once

    resnet = teaching_model.classifier(["red star", "blue heart"])
    before = (dict(fap.PROMPTS), dict(tapt.ASSETS))
    (note,) = ensure_visual_prompts(resnet, tmp_path)
    assert note.startswith("TAPT and FAP: not available") and (dict(fap.PROMPTS), dict(tapt.ASSETS)) == before
    with pytest.raises(DefenseError) as err:
        DEFENSES.create("tapt").predict(resnet, torch.rand(1, 3, 128, 128), seed=0)
    assert _why_not(f"DefenseError: {err.value}").startswith("not available on this model: multi-modal")
    assert _why_not("RuntimeError: boom") == "failed: RuntimeError: boom"


def test_report_keeps_the_load_test_section(tmp_path):
    from demo.bench.writeup import replace_loadtest_section, write

    out = tmp_path / "benchmarks.md"
    replace_loadtest_section(out, "## Load test\n\nfirst")
    replace_loadtest_section(out, "## Load test\n\nsecond")
    assert out.read_text().count("## Load test") == 1 and "second" in out.read_text()
    results = {"command": "c", "date": "d", "runs": [], "machine": {
        "cpu": "x", "usable_cores": 2, "cpu_count": 2, "torch_threads": 2, "torch": "t", "python": "p",
        "platform": "l"}}
    from demo.bench.writeup import replace_section

    replace_section(out, "## Sweeps on Ray\n\nthird", "<!-- sweeps: begin -->", "<!-- sweeps: end -->")
    write(results, out)
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "second" in text and "third" in text  # every marked section kept


def test_load_test_compares_results_without_times(tmp_path):
    from PIL import Image

    from demo.bench.load.harness import result_digest

    png = tmp_path / "a.png"
    Image.new("RGB", (4, 4), (10, 20, 30)).save(png)
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"columns": [{"prediction": "cat", "ms": 1.0}], "stages": [{"stage": "s", "ms": 2}]}))
    labels = ["Clean", "Time per stage", "Results (JSON)"]
    first = result_digest([str(png), 1.0, str(js)], labels)
    js.write_text(json.dumps({"columns": [{"prediction": "cat", "ms": 9.0}], "stages": [{"stage": "s", "ms": 3}]}))
    assert result_digest([str(png), 2.0, str(js)], labels) == first  # only times changed
    Image.new("RGB", (4, 4), (10, 20, 31)).save(png)
    assert result_digest([str(png), 1.0, str(js)], labels) != first  # one pixel level changed


def test_timed_repeats_cheap_work_until_the_time_budget_and_interleaves_references():
    import time

    from demo.bench.measure import timed

    order = []

    def work():
        order.append("work")
        time.sleep(0.002)

    samples, _, refs = timed(work, torch.device("cpu"), repeats=2, warmup=1,
                             references={"forward": lambda: order.append("ref")}, min_seconds=0.03)
    assert len(samples) > 2 and sum(samples) >= 30.0
    assert len(refs["forward"]) == len(samples)
    assert order[:3] == ["work", "ref", "work"] and order[1::2] == ["ref"] * len(samples)  # warm-up, then pairs
    few, _, _ = timed(work, torch.device("cpu"), repeats=2, warmup=0)
    assert len(few) == 2


def test_both_teaching_models_are_held_to_the_classroom_target():
    from demo.bench import writeup

    text = writeup.markdown(json.loads((Path(__file__).parents[1] / "docs" / "benchmarks.json").read_text()))
    for model in ("teaching", "teaching-vit"):
        section = text.split(f"### {model} on cpu")[1].split("\n### ")[0]
        assert "target <= 0.5 s" in section.split("**Full comparison**")[1].split("\n")[0], model


def test_an_update_rewrites_only_the_measured_sections(tmp_path):
    """`--update`: the measured model's section is replaced, the others and their command line stay, and
    the report says which section was rewritten by which command."""
    from demo.bench.collect import merged
    from demo.bench.writeup import machine, markdown

    def run(model, ms):
        return {"model": model, "device": "cpu", "error": f"stand-in {ms}"}

    previous = {"command": "python -m demo.bench --models a,b", "date": "2026-01-01 00:00", "machine": machine(),
                "runs": [run("a", 1), run("b", 2)], "cold_start": [], "memory": []}
    (tmp_path / "benchmarks.json").write_text(json.dumps(previous))
    new = {"command": "python -m demo.bench --models b --update", "date": "2026-02-02 00:00", "machine": machine(),
           "runs": [run("b", 3)], "cold_start": [], "memory": []}
    out = merged(new, tmp_path / "benchmarks.json")
    assert [r["error"] for r in out["runs"]] == ["stand-in 1", "stand-in 3"]
    assert out["command"] == previous["command"] and out["updates"][0]["sections"] == "b on cpu"
    text = markdown(out)
    assert "Section b on cpu rewritten by `python -m demo.bench --models b --update` on 2026-02-02" in text
    assert "Not measured: stand-in 1" in text and "stand-in 2" not in text
