"""The provisioning token, shown exactly once: copy it now (OSC 52), it is not kept.

Only this modal holds the token; after it closes nothing in the console has it.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Button, Static

from console.modals.dialog import ButtonDialog, button_row
from widgets.formatting import stamp


class TokenModal(ButtonDialog[None]):
    """Bank, token, expiry; `c` copies to the clipboard, Enter/Escape closes."""

    FOCUS = "#close"

    BINDINGS = [
        Binding("c", "copy", "Copy token"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(
        self, *, bank_uuid: str, bank_name: str, token: str, expires_at: datetime, reissued: bool
    ) -> None:
        super().__init__()
        self._bank_uuid = bank_uuid
        self._bank_name = bank_name
        self._token = token
        self._expires_at = expires_at
        self._reissued = reissued

    def compose(self) -> ComposeResult:
        title = "New provisioning token" if self._reissued else "Bank created"
        with Vertical(id="dialog"):
            yield Static(Text(title, style="bold"), id="dialog-title")
            yield Static(Text(f"{self._bank_name}  ·  {self._bank_uuid}"), classes="line")
            yield Static(Text(self._token, style="bold"), id="token")
            yield Static(Text(f"expires {stamp(self._expires_at)}"), classes="line")
            note = "Shown once: copy it now. The console does not keep it."
            if self._reissued:
                note += " The previous token no longer works."
            yield Static(Text(note, style="yellow"), classes="line")
            yield Static(Text("c copy (OSC 52) · Enter / Esc close", style="dim"), classes="hint")
            yield button_row(
                Button("Copy", id="copy", variant="primary"),
                Button("Close", id="close", variant="default"),
            )

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self._token)
        self.notify("Token copied to the clipboard (OSC 52).", title="Copied")

    def action_close(self) -> None:
        self._token = ""
        self.dismiss(None)
