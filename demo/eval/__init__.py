"""Evaluation: metrics, the comparison pipeline and `python -m demo.eval`."""
