"""Image shards: a run split with --start/--n merges into exactly the unsharded result, and the suite
resumes a stopped evaluation without recomputing finished shards."""
from __future__ import annotations

import json

import pytest

from demo.eval import runs as R, suite
from demo.eval.__main__ import main
from demo.eval.assemble import TIMING_FIELDS, MergeError, merge
from demo.eval.publish.report import finite_json


pytestmark = pytest.mark.usefixtures("one_thread")


def _outcome(x):
    """A result without what is measured rather than computed (wall times, the command, shard bookkeeping)."""
    x = finite_json(x)  # NaN == NaN as null
    if isinstance(x, dict):
        return {k: _outcome(v) for k, v in x.items() if k not in TIMING_FIELDS + ("shards", "start")}
    if isinstance(x, list):
        return [_outcome(v) for v in x]
    return x


def _argv(extra: list[str], defenses: str = "jpeg") -> list[str]:
    # The teaching model, so that accuracies are neither all 0 nor all 1; TTC is randomized and has a
    # detector-aware variant, JPEG has BPDA: every kind of row in a shard.
    return ["--model", "teaching", "--attack", "pgd", "--eps", "2", "--steps", "2",
            "--batch-size", "4", "--defenses", defenses, "--adaptive", *extra]


def test_shards_merge_into_the_unsharded_result(capsys):
    whole = main(_argv(["--n", "8"], "ttc,jpeg"))
    parts = [main(_argv(["--start", str(s), "--n", "4"], "ttc,jpeg")) for s in (4, 0)]
    merged = merge(parts)
    assert merged["data"]["n"] == 8 and [s["start"] for s in merged["shards"]] == [0, 4]
    assert _outcome(merged) == _outcome(whole)
    # Not vacuous: the rows carry per-image predictions and norms, and a variant attack.
    ttc = next(r for r in merged["defenses"] if r["name"] == "ttc")
    assert len(ttc["per_image"]["adaptive_pred"]) == 8 and len(merged["per_image"]["linf"]) == 8
    assert ttc["adaptive_variants"]
    assert 0 < merged["undefended"]["clean_accuracy"] < 1 or 0 < ttc["robust_accuracy_worst"] < 1
    # A shard's images and batch seeds are those of the whole run: a shard with another seed differs.
    other = main(_argv(["--start", "4", "--n", "4", "--seed", "7"]))
    assert other["per_image"]["labels"] == parts[0]["per_image"]["labels"]
    assert other["per_image"]["l2"] != parts[0]["per_image"]["l2"]


def test_shards_from_a_gpu_keep_every_outcome_and_leave_the_times_to_the_cpu_shards(capsys):
    import copy

    from demo.eval.publish.interim import shard_wall

    parts = [main(_argv(["--start", str(s), "--n", "4"])) for s in (0, 4)]
    on_cpu = merge(copy.deepcopy(parts))
    gpu = copy.deepcopy(parts[1])
    gpu["device"] = "cuda:0"  # as a GPU run records it; its times are a GPU's
    for row in gpu["defenses"]:
        row["ms_per_image"] *= 0.01
    gpu["undefended"]["ms_per_image"] *= 0.01
    mixed = merge([parts[0], gpu])
    assert _outcome({k: v for k, v in mixed.items() if k != "timing"}) == _outcome(
        {k: v for k, v in on_cpu.items() if k != "device"} | {"device": "cpu"})
    assert "CPU shards only" in mixed["timing"] and mixed["device"] == "cpu"
    cpu_row = next(r for r in parts[0]["defenses"] if r["name"] == "jpeg")
    row = next(r for r in mixed["defenses"] if r["name"] == "jpeg")
    assert row["ms_per_image"] == pytest.approx(cpu_row["ms_per_image"])  # the CPU shard's per-image time
    assert row["passes_per_image"] == next(r for r in on_cpu["defenses"] if r["name"] == "jpeg")["passes_per_image"]
    assert "on a GPU" in shard_wall(mixed["shards"]) and "GPU" not in shard_wall(on_cpu["shards"])


def test_merge_refuses_gaps_and_other_settings(capsys):
    a = main(_argv(["--start", "0", "--n", "4"]))
    c = main(_argv(["--start", "8", "--n", "4"]))
    with pytest.raises(MergeError, match="gap or overlap at image 4"):
        merge([a, c])
    other = main(_argv(["--start", "4", "--n", "4", "--eps", "4"]))
    with pytest.raises(MergeError, match="another setting"):
        merge([a, other])


def test_start_must_keep_the_batch_seeds(capsys):
    with pytest.raises(SystemExit):
        main(_argv(["--start", "2", "--n", "4"]))
    assert "multiple of --batch-size" in capsys.readouterr().err


def test_suite_runs_shards_resumes_and_merges(tmp_path, monkeypatch):
    name = "aa4_tiny_seen"
    command = ("python -m demo.eval " + " ".join(_argv(["--n", "8"])) + f" --out {tmp_path / name}")
    monkeypatch.setitem(R.RUNS, name, command)
    monkeypatch.setitem(R.SHARD_SIZE, name, 4)
    monkeypatch.setenv("PATH", str(tmp_path))  # the published `python` is this interpreter, not PATH's
    assert [s.start for s in R.shards(name, tmp_path)] == [0, 4]
    assert suite.run([name], jobs=2, folder=tmp_path) == 0
    first = json.loads((tmp_path / f"{name}.json").read_text())
    assert first["data"]["n"] == 8 and first["command"] == command and len(first["shards"]) == 2
    assert suite.status(tmp_path)[list(R.RUNS).index(name)] == f"{name}: done"

    # Stopped half-way: one shard and the merged file are gone; the other shard must not be recomputed.
    kept = R.shard_dir(name, tmp_path) / "00000.json"
    kept_bytes = kept.read_text()
    (tmp_path / f"{name}.json").unlink()
    (R.shard_dir(name, tmp_path) / "00004.json").unlink()
    assert f"{name}: 4 of 8 images (1 of 2 shards)" in suite.status(tmp_path)
    work = suite._work([name], force=False, folder=tmp_path)
    assert [label for label, _, _ in work] == [f"{name}[4:8]"]
    assert suite.run([name], jobs=1, folder=tmp_path) == 0
    assert kept.read_text() == kept_bytes
    assert _outcome(json.loads((tmp_path / f"{name}.json").read_text())) == _outcome(first)
    assert not R.shard_dir(name).exists()  # nothing (not even a log) written beside the published results


def test_an_unfinished_autoattack_run_is_reported_beside_pgd_on_the_same_images(tmp_path, monkeypatch):
    from demo.eval.publish import interim, published as P

    main(_argv(["--n", "8", "--out", str(tmp_path / "pgd4_tiny_seen")]))
    name = "aa4_tiny_seen"
    stronger = _argv(["--n", "8"])
    stronger[stronger.index("--eps") + 1], stronger[stronger.index("--steps") + 1] = "8", "5"
    monkeypatch.setitem(R.RUNS, name, "python -m demo.eval " + " ".join(stronger) + f" --out {tmp_path / name}")
    monkeypatch.setitem(R.SHARD_SIZE, name, 4)
    first = R.shards(name, tmp_path)[0]
    main(stronger[:stronger.index("--n")] + ["--start", "0", "--n", "4", "--out", str(first.path.with_suffix(""))]
         + stronger[stronger.index("--n") + 2:])

    (entry,) = interim.interim(P.load(tmp_path), tmp_path)
    assert (entry["name"], entry["run"], entry["n"], entry["total"]) == ("jpeg", name, 4, 8)
    # Per image: PGD-10's oblivious and adaptive predictions on the first 4 images, and the new run's.
    # (JPEG is also attacked through its differentiable approximation: that variant counts too.)
    pgd_row = next(r for r in P.load(tmp_path)["pgd4_tiny_seen"]["defenses"] if r["name"] == "jpeg")
    aa_row = next(r for r in json.loads(first.path.read_text())["defenses"] if r["name"] == "jpeg")
    pgd, aa = pgd_row["per_image"], aa_row["per_image"]
    labels = P.load(tmp_path)["pgd4_tiny_seen"]["per_image"]["labels"][:4]

    def survives(row, per, i, y):
        variants = [v["pred"][i] for v in row.get("adaptive_variants", {}).values()]
        return all(p == y for p in [per["oblivious_pred"][i], per["adaptive_pred"][i], *variants])

    assert pgd_row["adaptive_variants"]
    alone = [survives(pgd_row, pgd, i, y) for i, y in enumerate(labels)]
    both = [a and survives(aa_row, aa, i, labels[i]) for i, a in enumerate(alone)]
    assert (entry["pgd_worst"], entry["worst"]) == (sum(alone) / 4, sum(both) / 4)
    assert entry["worst"] < entry["pgd_worst"]  # not vacuous: the stronger attack found more
    assert "first 4 of 8" in interim.text([entry]) and interim.text([]) == ""

    # Once the run is complete it is published, and no longer reported as under way.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert suite.run([name], jobs=1, folder=tmp_path) == 0
    assert interim.interim(P.load(tmp_path), tmp_path) == []
