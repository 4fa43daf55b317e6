"""The fleet table: one row per bank, keyed by bank uuid."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, NamedTuple

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


def _doors_cell(bank: BankView) -> Text:
    open_ = bank.open_compartments
    return Text(f"{open_}/{len(bank.compartments)}", style="bold yellow" if open_ else "")


def _pending_cell(bank: BankView) -> Text:
    pending = bank.pending_commands
    return Text(str(pending), style="yellow" if pending else "")


# The cells of a row, in column order; each is rebuilt only when its look (`_looks`)
# changes.
_CELL_BUILDERS: tuple[Callable[[BankView, datetime, Sequence[float]], Text], ...] = (
    lambda bank, _now, _gaps: Text(truncate(bank.name, 200)),
    lambda bank, _now, _gaps: Text(truncate(bank.location, 200)),
    lambda bank, _now, _gaps: state_text(bank.status),
    heartbeat_cell,
    lambda bank, _now, _gaps: _doors_cell(bank),
    lambda bank, _now, _gaps: state_text(bank.config_state),
    lambda bank, _now, _gaps: _pending_cell(bank),
)


def bank_values(bank: BankView) -> dict[str, str]:
    """The full values the filter matches (`status:offline`, `bank:hall`, ...)."""
    open_ = bank.open_compartments
    return {
        "name": bank.name,
        "location": bank.location,
        "bank": f"{bank.name} {bank.location} {bank.uuid}",
        "uuid": bank.uuid,
        "status": bank.status,
        "doors": f"{open_}/{len(bank.compartments)}",
        "open": f"{open_}/{len(bank.compartments)}",
        "config": f"{bank.config_state} {bank.config_state.replace('_', ' ')}",
        "pending": str(bank.pending_commands),
        "cmds": str(bank.pending_commands),
    }


def bank_order(bank: BankView) -> dict[str, object]:
    """Sort values of the columns whose natural text order is not the right one."""
    heard = bank.last_heartbeat_at.timestamp() if bank.last_heartbeat_at else float("-inf")
    return {
        "heartbeat": -heard,  # ascending: the longest silence first
        "doors": (bank.open_compartments, len(bank.compartments)),
        "pending": bank.pending_commands,
    }


def bank_row(bank: BankView, now: datetime, gaps: Sequence[float]) -> Row:
    """The fleet row of one bank (all states in words)."""
    cells = tuple(build(bank, now, gaps) for build in _CELL_BUILDERS)
    return Row(bank.uuid, cells, bank_values(bank), bank_order(bank))


class _Fields(NamedTuple):
    """The fields of a bank its row is made from, but for the time of its last heartbeat:
    equal means a row away from the viewport needs no rebuild (comparing whole views,
    compartments included, costs more than the row itself)."""

    name: str
    location: str
    status: str
    heartbeat_interval_seconds: int
    doors: tuple[int, int]  # open, total
    config_state: str
    pending_commands: int


def _shown_fields(bank: BankView) -> _Fields:
    doors = [c.door_state for c in bank.compartments]
    return _Fields(
        bank.name,
        bank.location,
        bank.status,
        bank.heartbeat_interval_seconds,
        (doors.count("open"), len(doors)),
        bank.config_state,
        bank.pending_commands,
    )


def _looks(
    bank: BankView, fields: _Fields, now: datetime, gaps: Sequence[float]
) -> tuple[Hashable, ...]:
    """What each cell of `_CELL_BUILDERS` shows, cheap to compare (`fields` are the
    bank's `_shown_fields`)."""
    ceiling = 3.0 * bank.heartbeat_interval_seconds
    return (
        bank.name,
        bank.location,
        bank.status,
        (age(bank.last_heartbeat_at, now), spark_look(gaps, ceiling, HEARTBEAT_BARS)),
        fields.doors,
        bank.config_state,
        bank.pending_commands,
    )


class _Cached(NamedTuple):
    fields: _Fields
    looks: tuple[Hashable, ...]
    row: Row


class BankTable(KeyedTable):
    """Banks with status, heartbeat age and pulse, open/total doors, config, pending commands."""

    BINDINGS = [Binding("enter", "select_cursor", "View bank")]
    FLEX_MIN = 6
    FLEX_MAX = 100
    FLEX_WEIGHTS: ClassVar[dict[str, int]] = {"name": 2, "location": 1}
    DEFAULT_ORDER = "attention"

    COLUMNS = (
        ("name", "name", None),
        ("location", "location", None),
        ("status", "status", 13),
        ("heartbeat", "heartbeat", 12),
        ("doors", "open", 7),
        ("config", "config", 7),
        ("pending", "cmds", 4),
    )

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._cache: dict[str, _Cached] = {}

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

        Heartbeat cells (age and pulse) are refreshed for the rows in and around the
        viewport; a row further away keeps its last heartbeat cell until it is scrolled
        near (a new heartbeat alone does not rebuild it; a change of anything else it shows
        does), so the work per second does not grow with the fleet or the ingest rate.
        """
        rows = [self._kept(bank, now, pulses) for bank in banks]
        shown = self._sorted(filter_rows(rows, query))
        top, height = int(self.scroll_y), max(1, self.size.height)
        near = range(max(0, top - height), min(len(shown), top + 2 * height))
        if near:
            by_uuid = {bank.uuid: bank for bank in banks}
            for index in near:
                shown[index] = self._row(by_uuid[shown[index].key], now, pulses)
        self.sync(shown)

    def _kept(self, bank: BankView, now: datetime, pulses: Mapping[str, Sequence[float]]) -> Row:
        """The bank's last row while the fields it shows are the same (its heartbeat
        cell may be old), else its row now."""
        cached = self._cache.get(bank.uuid)
        fields = _shown_fields(bank)
        if cached is not None and cached.fields == fields:
            return cached.row
        return self._row(bank, now, pulses, fields)

    def _row(
        self,
        bank: BankView,
        now: datetime,
        pulses: Mapping[str, Sequence[float]],
        fields: _Fields | None = None,
    ) -> Row:
        """The bank's row as of `now`; the cells that look the same are the same objects,
        and the same row object is returned while none changed."""
        gaps = pulses.get(bank.uuid, ())
        if fields is None:
            fields = _shown_fields(bank)
        looks = _looks(bank, fields, now, gaps)
        cached = self._cache.get(bank.uuid)
        if cached is None:
            row = bank_row(bank, now, gaps)
        elif looks == cached.looks:
            row = cached.row
        else:
            same_fields = cached.fields == fields
            row = Row(
                bank.uuid,
                tuple(
                    cell if look == old_look else build(bank, now, gaps)
                    for build, cell, look, old_look in zip(
                        _CELL_BUILDERS, cached.row.cells, looks, cached.looks, strict=True
                    )
                ),
                cached.row.values if same_fields else bank_values(bank),
                bank_order(bank),
            )
        self._cache[bank.uuid] = _Cached(fields, looks, row)
        return row

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.BankChosen(str(event.row_key.value)))
