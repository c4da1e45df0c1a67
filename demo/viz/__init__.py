"""Figures and images for display (perturbation heatmaps, timing charts), rendered to PNG-ready arrays."""
from .charts import curve_chart, steps_chart, timing_chart  # noqa: F401
from .heatmaps import amplified, change_figure, defense_change_heatmap, magnitude, perturbation_heatmap  # noqa: F401
from .render import new_figure, to_array  # noqa: F401
