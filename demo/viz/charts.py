"""Charts: per-stage cost of a comparison, and the robustness curve of one image."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .render import new_figure, to_array


def timing_chart(stages: Sequence[tuple[str, float, float, float]], title: str = "Where the time goes") -> np.ndarray:
    """Horizontal bars of milliseconds per stage, annotated with model passes per image.

    stages: (name, ms, forward passes, grad passes) in run order (drawn top to bottom).
    """
    names = [s[0] for s in stages]
    ms = np.array([max(float(s[1]), 0.0) for s in stages])
    height = 0.45 * max(len(stages), 2) + 1.0
    fig = new_figure(7.0, height)
    ax = fig.add_subplot()
    longest = max((len(n) for n in names), default=10)
    fig.subplots_adjust(left=min(0.06 + 0.0105 * longest, 0.5), right=0.97, top=1 - 0.4 / height,
                        bottom=0.55 / height)
    y = np.arange(len(stages))
    ax.barh(y, ms, color="#4c72b0")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds", fontsize=9)
    ax.set_title(title, fontsize=10)
    top = float(ms.max()) if len(ms) else 0.0
    top = top if top > 0 else 1.0
    ax.set_xlim(0, max(top, 1e-3) * 1.05)
    for i, (_, t, fwd, grad) in enumerate(stages):
        parts = [f"{fwd:g} forward"] if fwd else []
        parts += [f"{grad:g} forward+backward"] if grad else []
        passes = " + ".join(parts) or "no model pass"
        text = f"{float(t):,.0f} ms · {passes}"
        # Long bars carry their label inside, short ones just after their end: nothing runs off the chart.
        if float(t) > 0.55 * top:
            ax.text(float(t) - top * 0.01, i, text, va="center", ha="right", fontsize=7, color="white")
        else:
            ax.text(float(t) + top * 0.01, i, text, va="center", ha="left", fontsize=7)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return to_array(fig)


def curve_chart(eps_255: Sequence[float], series: dict[str, Sequence[tuple[float, bool]]],
                title: str = "Robustness of this image", x_label: str = "attack budget eps (/255)") -> np.ndarray:
    """True-label probability vs eps (in /255) per model/defense; filled markers are correct predictions.

    series: name -> [(true-label probability, correct)] aligned with eps_255.
    """
    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.11, right=0.97, top=0.91, bottom=0.13)
    for k, (name, points) in enumerate(series.items()):
        probs = [p for p, _ in points]
        line, = ax.plot(eps_255, probs, marker="", label=name, linestyle="-" if k == 0 else "--")
        for x, (p, ok) in zip(eps_255, points):
            ax.plot([x], [p], marker="o", markersize=6, color=line.get_color(),
                    markerfacecolor=line.get_color() if ok else "white")
    ax.set_xlabel(x_label, fontsize=9)
    ax.set_ylabel("probability of the true label", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title + "  (filled = still correct, hollow = fooled)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return to_array(fig)
