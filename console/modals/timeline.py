"""`enter` on a transaction of the bank screen: its timeline (requested -> sent ->
answered, latency, result, duplicates, who) in a dialog."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.views import TransactionView
from widgets.transaction_timeline import timeline


class TimelineModal(ModalScreen[None]):
    """One command's timeline."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, txn: TransactionView, bank_name: str, location: str = "") -> None:
        super().__init__()
        self.txn = txn
        self._bank_name = bank_name
        self._location = location

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(Text("Transaction", style="bold"), id="dialog-title")
            yield Static(timeline(self.txn, self._bank_name, self._location), id="timeline")
            yield Static(Text("Esc close", style="dim"), classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
