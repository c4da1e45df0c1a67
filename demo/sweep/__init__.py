"""Sweeps: a grid of `demo.eval` evaluations run as Ray tasks, resumable, merged into one leaderboard.

`python -m demo.sweep --help` for the command. The modules: `grid` (axes -> cells, each one `demo.eval`
command line), `store` (the results folder, keys from configuration and weight hashes), `cells` (one
cell in a worker), `runner` (the Ray driver: concurrency, retries, progress), `merge` (leaderboard).
Ray is imported only by `runner`, inside its functions, so importing this package never needs it.
"""
from .grid import Cell, Grid, GridError, cells, grid_from, suite_cells  # noqa: F401
