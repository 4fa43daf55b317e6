"""backend/mqtt."""
