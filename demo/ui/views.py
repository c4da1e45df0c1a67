"""Turning library results into what the page components take: arrays, dicts, HTML, table rows, files.

Plain Python and numpy only, so every conversion can be tested without a server.
"""
from __future__ import annotations

import html
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from collections import namedtuple
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..pipeline import Column, ComparisonResult, Stage, to_uint8
from ..viz import defense_change_heatmap, perturbation_heatmap, timing_chart

TIMING_HEADERS = ["stage", "ms", "forward passes", "with gradient"]
# Downloads older than this are removed when new ones are written (the page links expire with them).
DOWNLOAD_TTL_S = 3600.0


class ColumnView(NamedTuple):
    image: np.ndarray | None      # (H, W, 3) uint8: the exact pixels classified
    label: dict[str, float] | None  # top-5 label -> probability (gr.Label)
    verdict: str                  # HTML badge: correct / wrong


EMPTY_COLUMN = ColumnView(None, None, "")


@dataclass(frozen=True)
class ResultColumn:
    """One result column of the page: `key` is the pipeline's column key (`Column.key`)."""
    key: str
    short: str      # its name in the verdict strip
    title: str      # its heading

    @property
    def field(self) -> str:
        """Its name in a view and on the page (`Page.columns`)."""
        return self.key.replace("-", "_")


# The page's result columns, in order. A new column: add it here (and compute it in the pipeline); its
# panel, its outputs, its place in CompareView and in the verdict strip follow from this list.
RESULT_COLUMNS = (
    ResultColumn("clean", "Clean", "Clean"),
    ResultColumn("attacked", "Attacked", "Attacked"),
    ResultColumn("training-time", "Training-time", "Training-time defense"),
    ResultColumn("test-time", "Test-time", "Test-time adaptation defense"),
    ResultColumn("training-free", "Training-free", "Training-free defense"),
    ResultColumn("stacked", "All three", "All three together"),
)
# Every column that classifies through a defense: one per paradigm, then their stack.
DEFENSE_COLUMNS = RESULT_COLUMNS[2:]


def view_type(name: str, columns, extras: tuple[str, ...]):
    """A view: one ColumnView per column (by its field), then the named extras (None until set). Its
    field order is the order of the event's outputs (`Page.outputs`)."""
    return namedtuple(name, [c.field for c in columns] + list(extras), defaults=(None,) * len(extras))


def verdict_html(column: Column, assumed: bool = False, outside: bool = False) -> str:
    """A colored badge: right or wrong at a glance; defense columns also name their method. `outside`: the
    model cannot know this image (see `demo.models.world_check`), so no answer is judged right or wrong."""
    pred, true = html.escape(column.pred_label), html.escape(column.labels[column.true_label])
    note = " <small>(true label assumed = clean prediction)</small>" if assumed else ""
    method = ""
    if column.defense is not None:
        name = "no defense" if column.defense == "none" else column.title.split(": ", 1)[-1]
        method = f'<div class="method-name">{html.escape(name)}</div>'
    if outside:
        return (f'{method}<div class="verdict unknown">? not judged: says <b>{pred}</b> ({column.probs.max():.0%}); '
                f'this model cannot know this image</div>')
    if column.correct:
        return f'{method}<div class="verdict ok">&#10004; correct: <b>{pred}</b> ({column.probs.max():.0%}){note}</div>'
    return (f'{method}<div class="verdict bad">&#10008; wrong: says <b>{pred}</b> ({column.probs.max():.0%}), '
            f'true label <b>{true}</b>{note}</div>')


def column_view(column: Column, assumed: bool = False, model_note: str = "", outside: bool = False) -> ColumnView:
    """`model_note`: said under the verdict when the model that answered is not the one asked for."""
    note = f'<div class="method">{html.escape(model_note)}</div>' if model_note else ""
    return ColumnView(to_uint8(column.image), {lab: p for lab, p in column.top},
                      verdict_html(column, assumed, outside) + note)

def verdict_strip(columns: list, titles: list[str], assumed: bool = False, outside: bool = False) -> str:
    """One line per column (name, ✔/✘ or ?, predicted label), so a phone shows the whole lesson in one
    screen above the full columns; a None column is not computed yet."""
    items = []
    for title, c in zip(titles, columns):
        if c is None:
            items.append(f'<li class="strip-item pending"><b>{html.escape(title)}</b> &#8987; computing</li>')
            continue
        mark, kind = ("?", "unknown") if outside else (("&#10004;", "ok") if c.correct else ("&#10008;", "bad"))
        word = "not judged" if outside else ("right" if c.correct else "wrong")
        items.append(f'<li class="strip-item verdict {kind}"><b>{html.escape(title)}</b> {mark} '
                     f'{html.escape(c.pred_label)} <span class="sr-only">({word})</span></li>')
    note = ('<div class="strip-note"><small>true label assumed = clean prediction</small></div>'
            if assumed and not outside else "")
    return f'<ul class="verdict-strip" aria-label="All verdicts at a glance">{"".join(items)}</ul>{note}'



def pending_view() -> ColumnView:
    """A column not computed yet (while a streamed comparison fills the others in)."""
    return ColumnView(None, None, '<div class="verdict pending">&#8987; computing&hellip;</div>')


def timing_rows(stages: list[Stage]) -> list[list]:
    rows = [[s.name, round(s.ms, 1), round(s.forward, 2), round(s.grad, 2)] for s in stages]
    rows.append(["total", round(sum(s.ms for s in stages), 1), round(sum(s.forward for s in stages), 2),
                 round(sum(s.grad for s in stages), 2)])
    return rows


def timing_figure(stages: list[Stage]) -> np.ndarray:
    return timing_chart([(s.name, s.ms, s.forward, s.grad) for s in stages])


def perturbation_figure(result: ComparisonResult, linf_budget: float | None) -> np.ndarray:
    """The attack's change; the color scale ends at the L-inf budget (pixel units) when there is one.
    In adaptive mode each defense was attacked on its own, and each of those perturbations gets a row."""
    rows = [perturbation_heatmap(result.clean, result.adversarial, linf_budget,
                                 title=f"What the attack added (largest change {float(result.delta.abs().max()) * 255:.1f}/255)")]
    if result.adaptive:
        for c in result.columns[2:]:
            if c.defense in (None, "none") or c.attack_stage is None:
                continue
            own = c.received if c.received is not None else c.image
            name = c.title.split(": ", 1)[-1]
            rows.append(perturbation_heatmap(result.clean, own, linf_budget,
                                             title=f"The attack through {name} (largest change "
                                                   f"{float((own - result.clean).abs().max()) * 255:.1f}/255)"))
    return _stack(rows)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows], axis=0)


def changes_figure(columns: list[Column]) -> np.ndarray | None:
    """One heatmap row per defense that changed the image it classified, stacked into one picture
    (None when no chosen defense touched the image)."""
    rows = [defense_change_heatmap(c.received, c.image, f"What {c.title.split(': ', 1)[-1]} changed")
            for c in columns if c.input_changed]
    return _stack(rows) if rows else None


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return _fmt(value[0])
        flat = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(flat) == len(value) and value:
            return f"{len(value)} values, mean {np.mean(flat):.3g}"
        return f"{len(value)} values"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))[:80]


def changed_markdown(columns: list[Column]) -> str:
    """What each defense did, in its own plain words (the raw facts stay in the JSON download)."""
    lines = []
    for c in columns:
        if c.defense in (None, "none"):
            continue
        if c.summary:
            lines.append(f"- **{c.title}**: {html.escape(c.summary)}")
            continue
        facts = "; ".join(f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in c.changed.items()) or "no details reported"
        where = "changed the image" if c.input_changed else "left the image as it was"
        lines.append(f"- **{c.title}** {where}. {facts}")
    return "\n".join(lines)


def attack_summary(result: ComparisonResult, attack_title: str, eps_text: str) -> str:
    attacked, true = result.column("attacked"), result.labels[result.true_label]
    delta = result.delta
    how = "adaptive (each defense attacked through itself)" if result.adaptive else "oblivious (the attack ignores the defenses)"
    if result.target is not None:
        goal = f"make the model say **{result.labels[result.target]}**"
    else:
        goal = f"move the model away from **{true}**"
    outcome = "succeeded" if result.attack_succeeded else "failed"
    return (f"**{attack_title}**{eps_text}, {how}: tried to {goal} and **{outcome}** "
            f"(now says **{attacked.pred_label}**). Largest pixel change {float(delta.abs().max()) * 255:.1f}/255, "
            f"L2 norm {float(delta.norm()):.3f}.")


# ------------------------------------------------------------------------------------- downloads

_downloads_lock = threading.Lock()
_downloads_root: Path | None = None


def _root() -> Path:
    global _downloads_root
    with _downloads_lock:
        if _downloads_root is None or not _downloads_root.is_dir():
            _downloads_root = Path(tempfile.mkdtemp(prefix="clip-attack-demo-"))
        return _downloads_root


def _sweep(root: Path) -> None:
    cutoff = time.time() - DOWNLOAD_TTL_S
    for entry in root.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def new_download_dir() -> Path:
    """A fresh folder for one request's files, so two requests never overwrite each other's."""
    root = _root()
    _sweep(root)
    return Path(tempfile.mkdtemp(dir=root))


def write_png(folder: Path, name: str, pixels: np.ndarray) -> str:
    path = folder / name
    Image.fromarray(pixels, "RGB").save(path, format="PNG")
    return str(path)


def write_json(folder: Path, name: str, data: dict) -> str:
    path = folder / name
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return str(path)


def safe_name(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
    return keep.strip("-")[:60] or "file"

