"""The fleet table: one row per bank, keyed by bank uuid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from backend.views import BankView
from widgets.badges import state_text
from widgets.formatting import age, truncate
from widgets.keyed_table import KeyedTable, Row, filter_rows
from widgets.sparkline import spark_text


def heartbeat_cell(bank: BankView, now: datetime, gaps: Sequence[float]) -> Text:
    """`3s ago ▁▁▂▁` — the age of the last heartbeat and the recent pulse."""
    text = Text(age(bank.last_heartbeat_at, now).ljust(8))
    text.append_text(spark_text(gaps, 3.0 * bank.heartbeat_interval_seconds, width=4))
    return text


def bank_row(bank: BankView, now: datetime, gaps: Sequence[float]) -> Row:
    """The fleet row of one bank (all states in words)."""
    doors = f"{bank.open_compartments}/{len(bank.compartments)}"
    pending = Text(str(bank.pending_commands), style="yellow" if bank.pending_commands else "")
    return Row(
        bank.uuid,
        (
            Text(truncate(bank.name, 60)),
            Text(truncate(bank.location, 10)),
            state_text(bank.status),
            heartbeat_cell(bank, now, gaps),
            Text(doors, style="bold yellow" if bank.open_compartments else ""),
            state_text(bank.config_state),
            pending,
        ),
    )


class BankTable(KeyedTable):
    """Banks with status, heartbeat age and pulse, open/total doors, config, pending commands."""

    BINDINGS = [Binding("enter", "select_cursor", "View bank")]
    FLEX_MAX = 32

    COLUMNS = (
        ("name", "name", None),
        ("location", "location", 10),
        ("status", "status", 13),
        ("heartbeat", "heartbeat", 12),
        ("doors", "open", 5),
        ("config", "config", 7),
        ("pending", "cmds", 4),
    )

    @dataclass
    class BankChosen(Message):
        """Enter was pressed on a bank row."""

        bank_uuid: str

    def show(
        self,
        banks: Sequence[BankView],
        now: datetime,
        pulses: Mapping[str, Sequence[float]],
        query: str = "",
    ) -> None:
        """Show `banks` (already in display order), filtered by `query`."""
        rows = [bank_row(b, now, pulses.get(b.uuid, ())) for b in banks]
        self.sync(filter_rows(rows, query))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.BankChosen(str(event.row_key.value)))
