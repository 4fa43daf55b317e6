"""Transactions: every command's timeline — requested, sent, answered, latency, result,
duplicates and who asked — newest first, with the highlighted one spelled out below.
"""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from backend.domain.command_status import CommandStatus
from backend.views import TransactionView
from console.screens.actions import BankActionScreen
from console.screens.tabs import Tab
from widgets.badges import state_text
from widgets.transaction_timeline import TransactionDetail, TransactionTable

LIMIT = 200


class TransactionsScreen(BankActionScreen[list[TransactionView]]):
    """The command log of the whole fleet."""

    TAB = Tab("2", "transactions", "Transactions", short="Txns")
    BINDINGS = [Binding("b", "view_bank", "Bank")]
    SELECTION_ACTIONS = frozenset({"view_bank"})

    def compose_body(self) -> ComposeResult:
        yield TransactionTable(id="transactions")
        yield TransactionDetail(id="transaction-detail")

    async def fetch(self) -> list[TransactionView]:
        return await self.ctx.gateway.list_transactions(None, LIMIT)

    def draw(self, data: list[TransactionView]) -> None:
        table = self.query_one(TransactionTable)
        table.show(data, self.ctx.plain_names(), self.query_text)
        self._show_detail(table.cursor_key)
        if table.row_count:
            self.say(None)
        else:
            hint = "open a compartment or push a config from a bank (1, then enter)"
            self.say(self.empty_text("No commands yet", hint))

    def headline(self, data: list[TransactionView]) -> Text:
        counts = Counter(t.status for t in data)
        text = Text(f"latest {len(data)}")
        for status in (
            CommandStatus.PENDING,
            CommandStatus.SENT,
            CommandStatus.ERROR,
            CommandStatus.TIMEOUT,
            CommandStatus.EXPIRED,
        ):
            if counts.get(status):
                text.append(f" · {counts[status]} ")
                text.append_text(state_text(status))
        return text

    def focus_main(self) -> None:
        self.query_one(TransactionTable).focus()

    def has_selection(self) -> bool:
        return self.cursor_of(TransactionTable) is not None

    def _show_detail(self, transaction_id: str | None) -> None:
        txn = next((t for t in self.data or [] if t.transaction_id == transaction_id), None)
        detail = self.query_one(TransactionDetail)
        if txn is None:
            detail.show(None)
            return
        name = self.ctx.names.get(txn.bank_uuid)
        detail.show(txn, name.name if name else txn.bank_uuid[:8], name.location if name else "")

    def on_transaction_table_highlighted(self, event: TransactionTable.Highlighted) -> None:
        self._show_detail(event.transaction_id)

    def action_view_bank(self) -> None:
        key = self.query_one(TransactionTable).cursor_key
        txn = next((t for t in self.data or [] if t.transaction_id == key), None)
        if txn is not None:
            self.view_bank(txn.bank_uuid)
