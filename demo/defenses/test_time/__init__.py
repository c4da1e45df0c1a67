"""test-time defenses."""
