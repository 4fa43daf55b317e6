"""Revoking a bank asks for the reason, which is recorded with the event (issue 14).

The modal captures the bank when it opens and returns it with the reason typed; Revoke
(or Enter in the field) only acts with a non-empty reason. Escape cancels.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Button, Input, Static

from console.modals.confirm import BankRequest
from console.modals.dialog import ButtonDialog, button_row

MAX_REASON = 500


@dataclass(frozen=True)
class RevokeRequest:
    """Revoke `bank` for `reason`."""

    bank: BankRequest
    reason: str


class RevokeModal(ButtonDialog[RevokeRequest | None]):
    """Name the bank, ask why, and return both; None when cancelled."""

    FOCUS = "#reason"

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, request: BankRequest) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        where = Text("Bank      ")
        where.append(self.request.bank_name, style="bold")
        place = Text("Location  ")
        place.append(self.request.location or "—", style="bold")
        with Vertical(id="dialog"):
            yield Static(Text("Revoke this bank's credentials?", style="bold"), id="dialog-title")
            yield Static(where, classes="line")
            yield Static(place, classes="line")
            yield Static(Text(f"uuid      {self.request.bank_uuid}", style="dim"), classes="line")
            yield Static(
                Text(
                    "The broker refuses the bank and every pending provisioning token is void "
                    "until a new token is issued."
                ),
                classes="line",
            )
            yield Input(
                placeholder="reason (required, recorded with the event)",
                max_length=MAX_REASON,
                id="reason",
            )
            yield Static(Text("Enter revoke · Esc cancel", style="dim"), classes="hint")
            yield button_row(
                Button("Revoke", id="confirm", variant="warning", disabled=True),
                Button("Cancel", id="cancel", variant="default"),
            )

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = not event.value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()

    def action_confirm(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if reason:
            self.dismiss(RevokeRequest(self.request, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)
