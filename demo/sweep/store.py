"""The results folder of a sweep: one JSON file per finished cell, keyed by its full configuration and a
hash of the weight files it reads, written atomically so that a killed sweep never leaves half a file.

Layout of `<out>/`:
    sweep.json                     the last sweep's command, grid and cells (name, key, command line)
    cells/<name>.<key>.json        a finished cell: the `demo.eval` result, its command, and "sweep" metadata
    failed/<name>.<key>.json       a cell that kept failing (removed once it succeeds)
    leaderboard.md, leaderboard.json, by_name/   the merged output (`demo.sweep.merge`)
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

from ..eval.publish.report import finite_json
from .grid import Cell, config

KEY_FORMAT = 1  # bump when the meaning of a stored cell changes, so old files stop matching
KEY_CHARS = 16
ROOT = Path(__file__).resolve().parents[2]
_HASHES: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def _model_files(key: str) -> list[Path]:
    """The files open_clip reads to build model `key` (a local folder's config and weights, a checkpoint
    file, a separate image-tower file). Hub models have none here: their id stands for their weights."""
    from ..models.zoo import spec_for

    spec = spec_for(key)
    files = []
    if spec.arch.startswith("local-dir:"):
        folder = Path(spec.arch[len("local-dir:"):])
        files += [folder / f for f in ("open_clip_config.json", "open_clip_model.safetensors",
                                       "open_clip_pytorch_model.bin") if (folder / f).is_file()]
    for path in (spec.pretrained, spec.visual_weights):
        if path and Path(path).is_file():
            files.append(Path(path))
    return files


def weight_files(model: str, defenses: list[str]) -> list[Path]:
    """Every weight or calibration file a cell of `model` with `defenses` reads: the model's own, each
    robust twin's image tower, APT's prompt (and the TeCoA tower under it), TTC's threshold."""
    from ..defenses.training_free import ttc
    from ..defenses.training_time import apt
    from ..models.zoo import ZOO, spec_for

    spec = spec_for(model)
    files = _model_files(model)
    for d in defenses:
        if d in spec.twins:
            files += _model_files(ZOO[spec.twins[d]].key)
        if d == "apt":
            files += [p for p in [apt.PROMPTS.get(spec.key)] if p is not None and p.is_file()]
            if "tecoa" in spec.twins:
                files += _model_files(ZOO[spec.twins["tecoa"]].key)
        if d == "ttc":
            files += [p for p in [ttc.CALIBRATIONS.get(spec.key)] if p is not None and p.is_file()]
    return sorted(set(files))


def sha256(path: Path) -> str:
    """Hex sha256 of a file, remembered per (path, size, mtime) within the process."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if memo in _HASHES:
            return _HASHES[memo]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    with _LOCK:
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


def _label(path: Path) -> str:
    # Relative to the project, so a cluster node with the project elsewhere computes the same names.
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path.resolve())


def weights(model: str, defenses: list[str]) -> dict[str, str]:
    """{file name: sha256} of the files `weight_files` lists; a hub model's id maps to "hub"."""
    from ..models.zoo import spec_for

    out = {_label(p): sha256(p) for p in weight_files(model, defenses)}
    spec = spec_for(model)
    if spec.online:
        out[spec.arch] = "hub"
    return out


def identity(cell: Cell, threads: int) -> dict:
    """What a cell's key is made of: its EvalConfig, the thread count (CPU results depend on it) and the
    weights it reads."""
    cfg = config(cell)
    return {"format": KEY_FORMAT, "config": asdict(cfg), "threads": int(threads),
            "weights": weights(cfg.model, cfg.defenses)}


def key(ident: dict) -> str:
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


def write_json(path: Path, data) -> Path:
    """Write JSON atomically: a temporary file in the same folder, then a rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(finite_json(data), indent=1, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


class Store:
    """Finished and failed cells under one results folder, found by key whatever their names."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.cells_dir, self.failed_dir = self.out / "cells", self.out / "failed"

    def _index(self, folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        return {p.name.rsplit(".", 2)[1]: p for p in folder.glob("*.json") if p.name.count(".") >= 2
                and not p.name.startswith(".")}

    def finished(self) -> dict[str, Path]:
        """{key: file} of every finished cell in the folder."""
        return self._index(self.cells_dir)

    def failures(self) -> dict[str, Path]:
        return self._index(self.failed_dir)

    def path(self, name: str, cell_key: str, failed: bool = False) -> Path:
        return (self.failed_dir if failed else self.cells_dir) / f"{name}.{cell_key}.json"

    def save(self, name: str, cell_key: str, record: dict) -> Path:
        path = write_json(self.path(name, cell_key), record)
        stale = self.failures().get(cell_key)  # an earlier sweep's failure of this cell is now resolved
        if stale is not None:
            stale.unlink(missing_ok=True)
        return path

    def save_failure(self, name: str, cell_key: str, record: dict) -> Path:
        return write_json(self.path(name, cell_key, failed=True), record)

    def load(self, cell_key: str) -> dict | None:
        path = self.finished().get(cell_key)
        return json.loads(path.read_text()) if path else None
