"""Charts: per-stage cost of a comparison, and the robustness curve of one image."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .raster import INK, MIN_TEXT, MUTED, WHITE, draw_text, text_width
from .raster import to_array as image_to_array
from .render import DPI, new_figure, to_array

BAR = (76, 114, 176)
# Okabe & Ito's colour-blind safe blue and vermillion; the two lines also differ in style and marker.
BLUE, VERMILLION = "#0072B2", "#D55E00"
OKABE_ITO = [BLUE, VERMILLION, "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
PT = round(MIN_TEXT * 72 / DPI + 1)  # matplotlib sizes are in points: 11 pt = 15 px at the figures' dpi


def _readable(*axes) -> None:
    for ax in axes:
        ax.tick_params(labelsize=PT)


def _nice_step(top: float) -> float:
    raw = top / 4
    magnitude = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    return float(next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw))


def timing_chart(stages: Sequence[tuple[str, float, float, float]], title: str = "Where the time goes") -> np.ndarray:
    """Horizontal bars of milliseconds per stage, annotated with model passes per image.

    stages: (name, ms, forward passes, grad passes) in run order (drawn top to bottom).
    """
    row, bar_h, pad, plot_w = 36, 22, 14, 420

    def annotation(ms, fwd, grad) -> str:
        parts = [f"{fwd:g} forward"] if fwd else []
        parts += [f"{grad:g} forward+backward"] if grad else []
        return f"{max(float(ms), 0.0):,.0f} ms · " + (" + ".join(parts) or "no model pass")

    label_w = int(max((text_width(s[0], 14) for s in stages), default=60)) + 12
    # Room for the longest annotation right of the longest bar, so no label is cut off.
    note_w = int(max((text_width(annotation(*s[1:])) for s in stages), default=120)) + 16
    width = pad + label_w + plot_w + note_w
    height = 38 + row * max(len(stages), 1) + 44
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_text(draw, (width // 2, 8), title, size=18, anchor="mt")
    top = max((float(s[1]) for s in stages), default=0.0)
    step = _nice_step(top if top > 0 else 1.0)
    axis_max = step * np.ceil((top if top > 0 else 1.0) / step)
    x0, y0 = pad + label_w, 38
    y_axis = y0 + row * max(len(stages), 1)

    def x_of(ms: float) -> float:
        return x0 + plot_w * ms / axis_max

    for k in range(int(round(axis_max / step)) + 1):
        x = x_of(k * step)
        draw.line([(x, y0), (x, y_axis)], fill=(232, 232, 232))
        draw.line([(x, y_axis), (x, y_axis + 4)], fill=INK)
        draw_text(draw, (x, y_axis + 6), f"{k * step:,.0f}", fill=MUTED, anchor="mt")
    draw_text(draw, (x0 + plot_w // 2, y_axis + 24), "milliseconds", size=14, fill=MUTED, anchor="mt")
    draw.line([(x0, y0), (x0, y_axis)], fill=INK)
    for i, (name, ms, fwd, grad) in enumerate(stages):
        ms = max(float(ms), 0.0)
        y = y0 + row * i + (row - bar_h) // 2
        draw.rectangle([x0, y, max(x_of(ms), x0 + 1), y + bar_h], fill=BAR)
        draw_text(draw, (x0 - 8, y + bar_h // 2), name, size=14, anchor="rm")
        draw_text(draw, (x_of(ms) + 6, y + bar_h // 2), annotation(ms, fwd, grad), anchor="lm")
    return image_to_array(canvas)


def curve_chart(eps_255: Sequence[float], series: dict[str, Sequence[tuple[float, bool]]],
                title: str = "Robustness of this image", x_label: str = "attack budget eps (/255)") -> np.ndarray:
    """True-label probability vs eps (in /255) per model/defense; filled markers are correct predictions.

    series: name -> [(true-label probability, correct)] aligned with eps_255.
    """
    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.17)
    for k, (name, points) in enumerate(series.items()):
        probs = [p for p, _ in points]
        line, = ax.plot(eps_255, probs, marker="", label=name, linestyle="-" if k == 0 else "--",
                        color=OKABE_ITO[k % len(OKABE_ITO)])
        for x, (p, ok) in zip(eps_255, points):
            ax.plot([x], [p], marker="o", markersize=6, color=line.get_color(),
                    markerfacecolor=line.get_color() if ok else "white")
    ax.set_xlabel(x_label, fontsize=PT)
    ax.set_ylabel("probability of the true label", fontsize=PT)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title + "  (filled = still correct, hollow = fooled)", fontsize=PT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=PT)
    ax.spines[["top", "right"]].set_visible(False)
    _readable(ax)
    return to_array(fig)


def steps_chart(true_prob: Sequence[float], loss: Sequence[float], step: int,
                title: str = "The attack, step by step") -> np.ndarray:
    """True-label probability (left axis) and loss (right axis) over the attack's steps, the chosen step marked."""
    fig = new_figure(6.4, 3.2)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.87, top=0.87, bottom=0.2)
    steps = list(range(len(true_prob)))
    ax.plot(steps, true_prob, color=BLUE, marker="o", markersize=4, label="true-label probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("attack step (last: the final, saved image)", fontsize=PT)
    ax.set_ylabel("probability of the true label", fontsize=PT, color=BLUE)
    twin = ax.twinx()
    twin.plot(steps, loss, color=VERMILLION, linestyle="--", marker="s", markersize=3, label="loss (cross-entropy)")
    twin.set_ylabel("loss (dashed)", fontsize=PT, color=VERMILLION)
    ax.axvline(step, color="#444444", linewidth=1.5)
    ax.set_title(f"{title}: step {step} of {len(steps) - 1}", fontsize=PT + 1)
    ax.grid(alpha=0.3)
    ax.spines[["top"]].set_visible(False)
    _readable(ax, twin)
    return to_array(fig)
