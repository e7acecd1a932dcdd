"""Admin use-cases and metrics."""
