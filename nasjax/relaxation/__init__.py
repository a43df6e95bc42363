"""Gradient-based search over a relaxed space (DARTS family)."""
