"""backend/store."""
