"""The `/` filter bar: an input docked under a table; Enter keeps the filter, Escape clears it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input

PLACEHOLDER = 'filter: words · field:value · -not · "two words" · Enter keeps · Esc clears'


class FilterBar(Input):
    """Type to filter the table above (words match anywhere in a row, case-insensitive)."""

    DEFAULT_CSS = """
    FilterBar { height: 1; display: none; }
    FilterBar.-active { display: block; }
    """

    BINDINGS = [Binding("escape", "clear", "Clear filter")]

    @dataclass
    class Updated(Message):
        """The filter text changed (every keystroke)."""

        query: str

    @dataclass
    class Done(Message):
        """The operator left the filter bar (Enter keeps it, Escape cleared it)."""

        query: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            placeholder=PLACEHOLDER,
            id=id,
            compact=True,
        )

    def open(self) -> None:
        """Show the bar and put the cursor in it."""
        self.add_class("-active")
        self.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Updated(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            self.remove_class("-active")
        self.post_message(self.Done(event.value))

    def action_clear(self) -> None:
        self.value = ""
        self.remove_class("-active")
        self.post_message(self.Updated(""))
        self.post_message(self.Done(""))
