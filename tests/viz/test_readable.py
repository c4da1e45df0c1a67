"""Every figure's text is at least MIN_TEXT pixels, the size a projector shows at 1440 px wide (the browser
test checks that figures are shown at their natural size there)."""
from __future__ import annotations

import matplotlib.text
import pytest
import torch

from demo.viz import charts, heatmaps, raster
from demo.viz.render import DPI


@pytest.fixture
def drawn_sizes(monkeypatch):
    """Pixel sizes of all text drawn while the test runs: PIL fonts and matplotlib texts."""
    sizes: list[float] = []
    font = raster.font

    def recording_font(size: int = raster.MIN_TEXT):
        sizes.append(size)
        return font(size)

    to_array = charts.to_array

    def recording_to_array(fig):
        sizes.extend(t.get_fontsize() * DPI / 72 for t in fig.findobj(matplotlib.text.Text)
                     if t.get_visible() and t.get_text().strip())
        return to_array(fig)

    monkeypatch.setattr(raster, "font", recording_font)
    monkeypatch.setattr(charts, "to_array", recording_to_array)
    return sizes


def test_every_figure_has_projector_sized_text(drawn_sizes):
    clean = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    heatmaps.perturbation_heatmap(clean, (clean + 4 / 255).clamp(0, 1), 4 / 255)
    heatmaps.defense_change_heatmap(clean, clean.flip(-1), "What JPEG changed")
    charts.timing_chart([("clean", 10.0, 1, 0), ("attack", 900.0, 0, 10)])
    charts.curve_chart([0, 1, 4], {"undefended": [(0.9, True), (0.5, True), (0.1, False)],
                                   "TeCoA": [(0.8, True), (0.7, True), (0.4, False)]})
    charts.steps_chart([0.9, 0.5, 0.1], [0.1, 0.9, 2.0], 1)
    assert len(drawn_sizes) > 20  # the recorders saw the figures' text
    assert min(drawn_sizes) >= raster.MIN_TEXT >= 14


def test_two_heatmaps_fit_side_by_side_at_natural_size():
    """The page shows the perturbation and the defense changes next to each other: ~600 px each at 1440."""
    clean = torch.rand(1, 3, 224, 224)
    assert heatmaps.perturbation_heatmap(clean, clean, 4 / 255).shape[1] <= 590
