"""`python -m demo.sweep` on a local 2-CPU Ray cluster with the teaching model: cells equal `demo.eval`
alone, a killed worker is retried, a cell that keeps failing is reported, a rerun computes nothing twice."""
from __future__ import annotations

import io
import json

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402

from demo.eval.run import evaluate  # noqa: E402
from demo.sweep import grid as G  # noqa: E402
from demo.sweep import runner  # noqa: E402
from demo.sweep import store as S  # noqa: E402
from demo.sweep.__main__ import main  # noqa: E402

# 4 cells of 8 images, PGD-2: a few seconds each on one core.
GRID = ["--models", "teaching", "--attacks", "pgd", "--eps", "4", "--steps", "2", "--defenses", "tecoa,jpeg",
        "--modes", "adaptive", "--data", "world,world-held-out", "--n", "8", "--batch-size", "4", "--seed", "0"]
TIMING = ("seconds", "ms_per_image", "adaptive_attack_ms_per_image")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    info = runner.connect(num_cpus=2)
    yield info
    runner.shutdown()


@pytest.fixture(scope="module")
def first_sweep(cluster, tmp_path_factory):
    """The tiny grid swept once through the command line (2 cells at a time)."""
    out = tmp_path_factory.mktemp("sweep")
    assert main(GRID + ["--out", str(out), "--progress-every", "5"]) == 0
    return out


def _without_timing(x):
    if isinstance(x, dict):
        return {k: _without_timing(v) for k, v in x.items() if k not in TIMING and k not in ("command", "sweep")}
    if isinstance(x, list):
        return [_without_timing(v) for v in x]
    return x


def _stored(out) -> dict[str, dict]:
    return {json.loads(p.read_text())["sweep"]["name"]: json.loads(p.read_text())
            for p in sorted((out / "cells").glob("*.json"))}


def test_cells_equal_demo_eval_alone(first_sweep):
    stored = _stored(first_sweep)
    cells = G.cells(G.grid_from({"models": "teaching", "attacks": "pgd", "eps": "4", "steps": "2",
                                 "defenses": "tecoa,jpeg", "data": "world,world-held-out", "n": 8, "batch_size": 4}),
                    "cpu")
    assert sorted(stored) == sorted(c.name for c in cells)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what OMP_NUM_THREADS=1 in the recorded command sets
    try:
        for cell in cells:
            alone, swept = evaluate(G.config(cell)), stored[cell.name]
            assert swept["command"].startswith("OMP_NUM_THREADS=1 ") and swept["threads"] == alone["threads"] == 1
            assert swept["undefended"]["robust_accuracy"] == alone["undefended"]["robust_accuracy"]
            assert swept["per_image"] == alone["per_image"]
            for a, b in zip(swept["defenses"], alone["defenses"]):
                assert a["robust_accuracy_worst"] == b["robust_accuracy_worst"] and a["per_image"] == b["per_image"]
            assert _without_timing(swept) == _without_timing(alone)
    finally:
        torch.set_num_threads(before)
    # The model is loaded once per worker process, not once per cell.
    workers = [c["sweep"]["worker"] for c in stored.values()]
    loads = sum(w["first_cell_of_model_in_process"] for w in workers)
    assert loads == len({w["pid"] for w in workers}) < len(cells)


def test_merged_leaderboard_records_the_command(first_sweep):
    summary = json.loads((first_sweep / "leaderboard.json").read_text())
    md = (first_sweep / "leaderboard.md").read_text()
    assert summary["command"].startswith("python -m demo.sweep --models teaching") and summary["command"] in md
    assert summary["done"] == summary["cells"] == 4 and not summary["failed"] and not summary["missing"]
    board = summary["leaderboard"]["teaching"]
    assert {"none", "tecoa", "jpeg"} <= {k for k, d in board.items() if "leaderboard_worst" in d}
    assert "TeCoA" in md and "JPEG" in md and "PGD, 2 steps" in md
    assert sorted(p.name for p in (first_sweep / "by_name" / "teaching").iterdir()) == [
        "pgd4_jpeg_held_out.json", "pgd4_jpeg_seen.json", "pgd4_tecoa_held_out.json", "pgd4_tecoa_seen.json"]


def test_rerun_computes_no_finished_cell(first_sweep, capsys):
    files = sorted((first_sweep / "cells").glob("*.json"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    capsys.readouterr()
    assert main(GRID + ["--out", str(first_sweep)]) == 0
    assert "ran 0 cell(s)" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    # One cell lost: only that one runs again.
    files[0].unlink()
    assert main(GRID + ["--out", str(first_sweep)]) == 0
    assert "ran 1 cell(s)" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in files[1:]] == mtimes[1:]


def test_killed_worker_is_retried_and_a_failing_cell_reported(first_sweep, cluster, tmp_path):
    cells = G.cells(G.grid_from({"attacks": "pgd", "eps": "4", "steps": "2", "defenses": "tecoa,jpeg", "n": 8,
                                 "batch_size": 4}), "cpu")
    victim = cells[1].name
    out, log = tmp_path / "out", io.StringIO()

    def sweep(marker: str, retries: int):
        opts = runner.Options(retries=retries, progress_every=5, crash=(victim, str(tmp_path / marker)), stream=log)
        return runner.sweep(cells, out, cluster, opts, "python -m demo.sweep (test)", {}, "cpu")

    # No retry allowed: the killed cell is reported as failed, the other one is saved.
    res, summary = sweep("first", retries=0)
    assert res["failed"] == [victim] and (tmp_path / "first").exists()
    assert summary["done"] == 1 and [f["name"] for f in summary["failed"]] == [victim]
    assert "Incomplete" in (out / "leaderboard.md").read_text() and len(S.Store(out).failures()) == 1
    # Killed again on its next first attempt, but retried: complete, and the finished cell is not rerun.
    res, summary = sweep("second", retries=1)
    assert (tmp_path / "second").exists() and res["ran"] == 1 and res["cached"] == 1 and not res["failed"]
    assert summary["done"] == 2 and not summary["failed"] and not S.Store(out).failures()
    assert {"tecoa", "jpeg", "none"} <= set(summary["leaderboard"]["teaching"])
    # The retried cell's numbers are those of the same cell in the first sweep.
    again, first = _stored(out)[victim], _stored(first_sweep)[victim]
    assert _without_timing(again) == _without_timing(first)
    assert "FAILED " + victim in log.getvalue()


def test_progress_line_counts_and_estimates():
    p = runner.Progress(total=10, cached=2, stream=io.StringIO())
    p.done, p.failed, p.running, p.start = 3, 1, 2, p.start - 30
    line = p.line()
    assert "5/10 done (2 from earlier runs), 2 running, 1 failed, 2 queued" in line and "ETA 40 s" in line
