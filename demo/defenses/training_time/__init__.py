"""training-time defenses."""
