"""backend/broker."""
