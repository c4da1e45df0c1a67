"""Training commands for the teaching model and its robust variants (`python -m demo.train`)."""
