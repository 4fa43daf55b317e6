"""Form fields the console's forms share."""

from __future__ import annotations

from textual.widgets import Input


def whole_number_input(value: str, *, id: str, maximum: int) -> Input:
    """A compact field for a whole number up to `maximum` (no longer than it, typed)."""
    return Input(value, id=id, compact=True, type="integer", max_length=len(str(maximum)))
