"""A one-line question with an optional answer (the note of an acknowledgement)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

MAX_NOTE = 500


class NoteModal(ModalScreen[str | None]):
    """`title`, an optional note; Enter or OK answers the note (maybe empty), Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "note (optional)") -> None:
        super().__init__()
        self._title = title
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self._title, style="bold"), id="dialog-title")
            yield Input(placeholder=self._placeholder, id="note", max_length=MAX_NOTE)
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Acknowledge", id="ok", variant="primary")
            yield Static(Text("Enter acknowledges · Esc cancels", style="dim"), classes="hint")

    def on_mount(self) -> None:
        self.query_one("#note", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.dismiss(self.query_one("#note", Input).value.strip())
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
