"""Figures render headless to RGB arrays, carry a scale, and leave no figure behind."""
import matplotlib
import numpy as np
import torch

from demo import viz


def _no_open_figures():
    import matplotlib.pyplot as plt  # only to inspect pyplot's registry, which the library must not use
    return plt.get_fignums() == []


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_perturbation_heatmap():
    clean = torch.rand(1, 3, 32, 32)
    adv = (clean + 4 / 255 * torch.sign(torch.randn_like(clean))).clamp(0, 1)
    out = viz.perturbation_heatmap(clean, adv, eps=4 / 255)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] > 100 and out.shape[1] > 200
    assert len(np.unique(out.reshape(-1, 3), axis=0)) > 50  # a colormap, not a blank canvas
    assert _no_open_figures()


def test_magnitude_and_amplified():
    delta = torch.zeros(3, 4, 4)
    delta[1, 2, 3] = -2 / 255
    mag = viz.magnitude(delta)
    assert mag.shape == (4, 4) and abs(mag[2, 3] - 2.0) < 1e-4 and mag.sum() == mag[2, 3]
    amp = viz.amplified(delta, bound=2 / 255)
    assert amp[2, 3, 1] == 0.0 and amp[0, 0, 0] == 0.5
    assert np.all(viz.amplified(torch.zeros(3, 2, 2)) == 0.5)  # no change stays mid-gray


def test_change_heatmap_handles_other_sizes_and_no_change():
    before = torch.rand(3, 32, 32)
    assert viz.defense_change_heatmap(before, torch.rand(3, 40, 40), "resize").shape[2] == 3
    assert viz.defense_change_heatmap(before, before.clone(), "identity").dtype == np.uint8


def test_figures_are_fast():
    import time

    clean = torch.rand(1, 3, 128, 128)
    start = time.perf_counter()
    viz.perturbation_heatmap(clean, (clean + 4 / 255).clamp(0, 1), eps=4 / 255)
    viz.timing_chart([("clean inference", 3.0, 1, 0), ("attack", 900.0, 0, 10)])
    # Drawn on every request: must stay far below the model's own cost (generous bound for busy CI).
    assert time.perf_counter() - start < 1.0


def test_timing_and_curve_charts():
    out = viz.timing_chart([("clean inference", 3.0, 1, 0), ("attack", 900.0, 0, 10), ("defense", 0.0, 0, 0)])
    assert out.dtype == np.uint8 and out.shape[2] == 3
    assert viz.timing_chart([]).shape[2] == 3
    curve = viz.curve_chart([0, 2, 4], {"Undefended": [(0.9, True), (0.4, False), (0.1, False)],
                                        "JPEG": [(0.8, True), (0.7, True), (0.5, True)]})
    assert curve.shape[2] == 3
    assert _no_open_figures()


def test_figures_are_freed(monkeypatch):
    import gc
    import weakref

    from demo.viz import charts, render

    made = []

    def tracking(*args, **kwargs):
        fig = render.new_figure(*args, **kwargs)
        made.append(weakref.ref(fig))
        return fig

    monkeypatch.setattr(charts, "new_figure", tracking)
    for _ in range(5):
        viz.curve_chart([0, 1], {"Undefended": [(0.9, True), (0.2, False)]})
    gc.collect()
    assert len(made) == 5 and all(ref() is None for ref in made)
