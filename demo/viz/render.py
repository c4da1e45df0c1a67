"""Render matplotlib figures to RGB arrays without pyplot.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas: no global figure registry, so
nothing leaks between requests and nothing needs a display. The array can be saved losslessly as PNG.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)  # headless servers have no display; never pick an interactive backend

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 100


def new_figure(width: float, height: float) -> Figure:
    # Fixed margins instead of constrained layout: the layout solver cost more than drawing itself, and
    # figures are drawn on every request.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def to_array(fig: Figure) -> np.ndarray:
    """(H, W, 3) uint8 pixels of the drawn figure; the figure is cleared afterwards."""
    try:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        fig.clear()
