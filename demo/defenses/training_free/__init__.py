"""training-free defenses."""
