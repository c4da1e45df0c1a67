"""The linear probes behind the ResNet/ViT comparison of what each tower's features say about held-out pairs."""
from __future__ import annotations

import json

import torch

from demo import world
from demo.eval import architectures, probe
from demo.eval.publish import published as P


def test_a_probe_reads_what_the_features_carry_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    x = torch.randn(400, 6, generator=g)
    x[:, 2] += 6.0 * y  # the class is written in one feature
    predict = probe.fit_probe(x[:300], y[:300], 4)
    assert float((predict(x[300:]) == y[300:]).float().mean()) > 0.9
    noise = torch.randn(400, 6, generator=g)  # no class in these features: held-out accuracy near chance
    predict = probe.fit_probe(noise[:300], y[:300], 4)
    assert float((predict(noise[300:]) == y[300:]).float().mean()) < 0.45


def test_the_probe_command_writes_every_stage_of_both_towers(tmp_path):
    out = tmp_path / "probe"
    assert probe.main(["--n-train", "64", "--n-test", "32", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["command"] == f"python -m demo.eval.probe --n-train 64 --n-test 32 --out {out}"
    for model in probe.MODELS:
        r = result["models"][model]
        assert len(r["stages"]) == len(r["stage_names"]) == 5 and r["stage_names"][-1] == "image embedding"
        for stage in r["stages"]:
            assert all(0.0 <= stage[f"{w}_{s}"] <= 1.0 for w in probe.TARGETS for s in ("seen", "held_out"))
    rows = out.with_suffix(".md").read_text().splitlines()
    assert sum(line.startswith("| ViT |") for line in rows) == 5
    for model in probe.MODELS:
        pairs = result["models"][model]["held_out_pairs"]
        assert set(pairs) <= {f"{c} {s}" for c, s in world.HELD_OUT} and sum(p["n"] for p in pairs.values()) == 32
        for p in pairs.values():
            # every wrong answer is counted once, under a name that is not the pair's own
            assert sum(p["confusions"].values()) == round(p["n"] * (1 - p["accuracy"]))
    assert "commonest wrong answer" in out.with_suffix(".md").read_text()
    for model in probe.MODELS:
        gap = result["models"][model]["hue_gap"]
        assert set(gap) == set(world.SHAPES)
        assert {g["held_out_in"] for g in gap.values()} == set(world.COLOR_NAMES)  # one held-out colour per shape
        assert all(0.0 <= g[k] <= 1.0 for g in gap.values() for k in ("in_gap", "elsewhere"))
    assert "in the gap" in out.with_suffix(".md").read_text()


def test_the_published_probe_is_what_the_results_page_quotes():
    results = P.load()
    text = architectures.probe_section(results)
    assert architectures.probe_section({}) == ""
    probe_result = results["shape_probe"]
    n = probe_result["n_test"]
    for model in probe.MODELS:
        last = probe_result["models"][model]["stages"][-1]["shape_held_out"]
        assert f"{100 * last:.1f}% [" in text
    assert text in (P.RESULTS_DIR.parent / "results.md").read_text()
    assert f"{n} test images per split" in text


def test_the_readme_quotes_the_published_probe():
    models = P.load()["shape_probe"]["models"]
    readme = (P.RESULTS_DIR.parents[1] / "README.md").read_text()
    resnet, vit = (round(100 * models[m]["stages"][-1]["shape_held_out"]) for m in ("teaching", "teaching-vit"))
    assert f"from the ResNet's image embedding {resnet}% of the time and from the ViT's {vit}%" in " ".join(readme.split())


def test_the_readme_quotes_the_published_hue_gap():
    models = P.load()["shape_probe"]["models"]
    readme = " ".join((P.RESULTS_DIR.parents[1] / "README.md").read_text().split())
    vit, resnet = models["teaching-vit"]["hue_gap"]["triangle"], models["teaching"]["hue_gap"]["triangle"]
    assert vit["held_out_in"] == "green"
    assert (f"a triangle is named at {100 * vit['elsewhere']:.1f}% of the hues off-palette images may use and at "
            f"{100 * vit['in_gap']:.1f}% at green's hue, the colour it is held out in (the ResNet: "
            f"{100 * resnet['in_gap']:.1f}% there)") in readme
