"""`demo.sweep` without a cluster: grid input, cell command lines, keys, and importing without Ray."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from demo.sweep import grid as G
from demo.sweep import store as S
from demo.sweep.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_toml_grid_expands_to_demo_eval_commands(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text('attacks = ["pgd", "autoattack"]\neps = [1, 4]\ndefenses = ["tecoa", "fare"]\n'
                    'data = ["world", "world-held-out"]\nn = 20\n[steps]\npgd = 3\n')
    cells = G.cells(G.grid_from(G.read_toml(path)), "cpu")
    assert len(cells) == 2 * 2 * 2 * 2
    by_name = {c.name: c for c in cells}
    pgd = by_name["teaching__pgd4__tecoa__seen__adaptive"]
    assert pgd.run == "pgd4_tecoa_seen" and pgd.argv[-2:] == ("--device", "cpu")
    cfg = G.config(pgd)
    assert cfg.params["steps"] == 3 and cfg.params["eps"] == pytest.approx(4 / 255) and cfg.defenses == ["tecoa"]
    aa = G.config(by_name["teaching__autoattack1__fare__held_out__adaptive"])
    assert "steps" not in aa.params and aa.data == "world-held-out" and aa.adaptive  # steps only where given
    assert by_name["teaching__autoattack1__fare__held_out__adaptive"].run == "aa1_fare_held_out"


def test_grouped_defenses_and_oblivious_mode():
    cells = G.cells(G.grid_from({"defenses": "none,jpeg", "group_defenses": True, "modes": "oblivious"}))
    assert len(cells) == 1 and "--adaptive" not in cells[0].argv
    assert G.config(cells[0]).defenses == ["none", "jpeg"] and cells[0].run == "pgd4_group_seen"


def test_steps_per_attack_and_extra_parameters_from_the_command_line():
    cells = G.cells(G.grid_from({"attacks": "pgd,fgsm", "steps": "pgd=3", "set": ["random_start=false"],
                                 "defenses": ""}))
    pgd, fgsm = (G.config(c) for c in cells)
    assert pgd.params["steps"] == 3 and pgd.params["random_start"] is False and pgd.defenses == []
    assert set(fgsm.params) == {"eps"} and cells[0].run == "pgd4_undefended_seen"


@pytest.mark.parametrize("spec, message", [
    ({"attacks": "pgd,nope"}, "unknown attack 'nope'"),
    ({"defenses": "tecoa,nope"}, "unknown defense 'nope'"),
    ({"modes": "sometimes"}, "unknown mode"),
    ({"data": "/no/such/folder"}, "not 'world'"),
    ({"eps": "4,x"}, "not a number"),
    ({"n": 0}, "must be an integer >= 1"),
    ({"atacks": "pgd"}, "unknown grid key(s) atacks"),
    ({"set": ["kappa=5"]}, "no attack of the grid takes 'kappa'"),
    ({"models": "nope"}, "unknown model"),
])
def test_bad_grid_input_raises_grid_error(spec, message):
    with pytest.raises(G.GridError, match=message.replace("(", r"\(").replace(")", r"\)")):
        G.cells(G.grid_from(spec))


def test_a_combination_demo_eval_refuses_names_the_cell():
    with pytest.raises(G.GridError, match="cell teaching__cw4.*has no parameter 'eps'"):
        G.cells(G.grid_from({"attacks": "cw", "eps": "4"}))


def test_bad_grid_input_is_an_argparse_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--attacks", "pgd,nope", "--dry-run", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown attack 'nope'" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("attacks = [pgd\n")
    with pytest.raises(SystemExit) as exc:
        main(["--grid", str(tmp_path / "bad.toml"), "--dry-run"])
    assert exc.value.code == 2 and "not valid TOML" in capsys.readouterr().err


def test_suite_cells_are_the_published_runs():
    from demo.eval.runs import RUNS

    cells, skipped = G.suite_cells("cpu")
    # The sanity checks and the randomized-defense protocol are their own commands, not `demo.eval` cells.
    others = [k for k in RUNS if not RUNS[k].startswith("python -m demo.eval --")]
    assert "sanity" in others and "rand_rrp_eot1_seen" in others and skipped == others
    assert [c.name for c in cells] == [k for k in RUNS if k not in others]
    for c in cells:
        assert "--out" not in c.argv and c.run == c.name and G.config(c).device == "cpu"


def test_keys_cover_configuration_threads_and_weights(tmp_path):
    def ident(model="teaching", defenses="jpeg", n=8, threads=1):
        cell = G.cells(G.grid_from({"models": model, "defenses": defenses, "n": n}), "cpu")[0]
        return S.identity(cell, threads)

    jpeg, tecoa, apt, ttc = (ident(defenses=d)["weights"] for d in ("jpeg", "tecoa", "apt", "ttc"))
    assert set(jpeg) == {"assets/teaching/open_clip_config.json", "assets/teaching/open_clip_model.safetensors"}
    assert set(tecoa) - set(jpeg) == {"assets/teaching/visual_tecoa.safetensors"}
    assert set(apt) - set(jpeg) == {"assets/teaching/apt_prompt.safetensors", "assets/teaching/visual_tecoa.safetensors"}
    assert set(ttc) - set(jpeg) == {"assets/teaching/ttc_calibration.json"}
    keys = {S.key(ident()), S.key(ident(n=9)), S.key(ident(threads=2)), S.key(ident(defenses="tecoa"))}
    assert len(keys) == 4 and S.key(ident()) == S.key(ident())

    # The same configuration with other weights: another key.
    copy = tmp_path / "model"
    copy.mkdir()
    for f in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy(ROOT / "assets" / "teaching" / f, copy / f)
    before = S.key(ident(model=f"local-dir:{copy}"))
    cfg = json.loads((copy / "open_clip_config.json").read_text())
    (copy / "open_clip_config.json").write_text(json.dumps(cfg, indent=4))
    assert S.key(ident(model=f"local-dir:{copy}")) != before


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "cells" / "a.0123456789abcdef.json"
    S.write_json(target, {"x": 1})
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(S.os, "replace", fail)
    with pytest.raises(OSError):
        S.write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 1} and list(target.parent.iterdir()) == [target]
    assert S.Store(tmp_path).finished() == {"0123456789abcdef": target}


def test_demo_eval_ui_and_sweep_import_without_ray(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # any 'import ray' now raises ImportError\n"
        "import demo.eval, demo.eval.run, demo.eval.__main__, demo.eval.suite, demo.ui\n"
        "import demo.sweep, demo.sweep.runner, demo.sweep.merge, demo.sweep.__main__ as cli\n"
        f"assert cli.main(['--defenses', 'jpeg', '--dry-run', '--out', {str(tmp_path)!r}]) == 0\n"
        "try:\n"
        "    demo.sweep.runner.connect()\n"
        "except demo.sweep.runner.SweepError as exc:\n"
        "    assert 'pip install' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('connect() worked without Ray')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 to run" in done.stdout
