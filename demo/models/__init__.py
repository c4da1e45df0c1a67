"""Model zoo, loading and the zero-shot classifier."""
