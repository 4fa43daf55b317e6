"""backend/domain."""
