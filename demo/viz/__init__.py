"""Figures and images for display (perturbation heatmaps, timing charts)."""
