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
from widgets.sparkline import spark_look, spark_text

HEARTBEAT_BARS = 4


def heartbeat_cell(bank: BankView, now: datetime, gaps: Sequence[float]) -> Text:
    """`3s ago ▁▁▂▁` — the age of the last heartbeat and the recent pulse."""
    text = Text(age(bank.last_heartbeat_at, now).ljust(8))
    text.append_text(spark_text(gaps, 3.0 * bank.heartbeat_interval_seconds, width=HEARTBEAT_BARS))
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


def _look(bank: BankView, now: datetime, gaps: Sequence[float]) -> tuple[str, tuple[str, str]]:
    """What the heartbeat cell shows, cheap to compare."""
    ceiling = 3.0 * bank.heartbeat_interval_seconds
    return age(bank.last_heartbeat_at, now), spark_look(gaps, ceiling, HEARTBEAT_BARS)


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

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._cache: dict[str, tuple[BankView, tuple[str, tuple[str, str]], Row]] = {}

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
        """Show `banks` (already in display order), filtered by `query`.

        Heartbeat ages are refreshed for the rows in and around the viewport; a row further
        away keeps its last look until it is scrolled near (or its bank changes), so the
        work per second does not grow with the fleet.
        """
        rows = [self._known(bank) or self._build(bank, now, pulses) for bank in banks]
        shown = filter_rows(rows, query)
        top, height = int(self.scroll_y), max(1, self.size.height)
        by_uuid = {bank.uuid: bank for bank in banks}
        for index in range(max(0, top - height), min(len(shown), top + 2 * height)):
            shown[index] = self._row(by_uuid[shown[index].key], now, pulses)
        self.sync(shown)

    def _known(self, bank: BankView) -> Row | None:
        """The cached row of an unchanged bank (its ages may be old)."""
        cached = self._cache.get(bank.uuid)
        if cached is not None and (cached[0] is bank or cached[0] == bank):
            return cached[2]
        return None

    def _row(self, bank: BankView, now: datetime, pulses: Mapping[str, Sequence[float]]) -> Row:
        """The bank's row, reused while the bank and its heartbeat cell look the same."""
        gaps = pulses.get(bank.uuid, ())
        cached = self._cache.get(bank.uuid)
        if cached is not None and cached[1] == _look(bank, now, gaps):
            known = self._known(bank)
            if known is not None:
                return known
        return self._build(bank, now, pulses)

    def _build(self, bank: BankView, now: datetime, pulses: Mapping[str, Sequence[float]]) -> Row:
        gaps = pulses.get(bank.uuid, ())
        row = bank_row(bank, now, gaps)
        self._cache[bank.uuid] = (bank, _look(bank, now, gaps), row)
        return row

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.BankChosen(str(event.row_key.value)))
