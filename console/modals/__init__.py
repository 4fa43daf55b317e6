"""Modal dialogs of the console: confirmations, the one-time token, help."""
