"""backend/http."""
