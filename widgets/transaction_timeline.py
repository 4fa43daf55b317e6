"""Command transactions: a keyed table (one row per transaction id) and a detail line that
shows the timeline of the highlighted command: requested -> sent -> answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable, Static

from backend.domain.command_status import CommandStatus
from backend.views import TransactionView
from widgets.badges import state_text
from widgets.formatting import clock_time, duration, offset, stamp, truncate
from widgets.keyed_table import KeyedTable, Row, filter_rows


def action_label(txn: TransactionView) -> str:
    """`open #3`, `config` or the raw action name."""
    if txn.action == "open_compartment":
        return f"open #{txn.compartment_number}"
    if txn.action == "apply_config":
        return "config"
    return txn.action.replace("_", " ")


def result_label(txn: TransactionView) -> Text:
    """The error code (or message) of a failed command; `late` when it came after the end."""
    text = Text()
    if txn.error_code or (txn.status is CommandStatus.ERROR and txn.message):
        text.append(truncate(txn.error_code or txn.message or "", 60), style="bold red")
    if txn.late:
        text.append(" late" if text.plain else "late", style="magenta")
    return text


def transaction_values(txn: TransactionView, bank_name: str) -> dict[str, str]:
    """The full values the filter matches (`action:config`, `status:error`, `bank:`...)."""
    return {
        "requested": stamp(txn.requested_at),
        "time": stamp(txn.requested_at),
        "bank": f"{bank_name} {txn.bank_uuid}",
        "action": f"{txn.action} {action_label(txn)}",
        "status": txn.status,
        "latency": duration(txn.latency_seconds),
        "result": f"{txn.error_code or ''} {txn.message or ''} {'late' if txn.late else ''}",
        "dups": str(txn.duplicate_count),
        "by": txn.requested_by,
        "actor": txn.requested_by,
        "id": txn.transaction_id,
    }


def transaction_row(txn: TransactionView, bank_name: str) -> Row:
    """The table row of one transaction (status in words, latency, duplicates, operator)."""
    return Row(
        txn.transaction_id,
        (
            Text(clock_time(txn.requested_at)),
            Text(truncate(bank_name, 200)),
            Text(action_label(txn)),
            state_text(txn.status),
            Text(duration(txn.latency_seconds)),
            result_label(txn),
            Text(str(txn.duplicate_count), style="yellow" if txn.duplicate_count else ""),
            Text(truncate(txn.requested_by, 200)),
        ),
        transaction_values(txn, bank_name),
        {
            "requested": txn.requested_at.timestamp(),
            "latency": txn.latency_seconds if txn.latency_seconds is not None else float("inf"),
            "dups": txn.duplicate_count,
        },
    )


class TransactionTable(KeyedTable):
    """Transactions, newest first, keyed by transaction id."""

    COLUMNS = (
        ("requested", "time", 8),
        ("bank", "bank", None),
        ("action", "action", 8),
        ("status", "status", 7),
        ("latency", "latency", 7),
        ("result", "result", None),
        ("dups", "dups", 4),
        ("by", "by", 8),
    )
    FLEX_MIN = 8
    FLEX_WEIGHTS: ClassVar[dict[str, int]] = {"bank": 1, "result": 2}

    @dataclass
    class Highlighted(Message):
        """The cursor moved to another transaction."""

        transaction_id: str | None

    @dataclass
    class Chosen(Message):
        """Enter on a transaction."""

        transaction_id: str

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(str(event.row_key.value)))

    def show(
        self,
        transactions: Sequence[TransactionView],
        names: Mapping[str, str],
        query: str = "",
    ) -> None:
        """Show `transactions` (in display order), bank names from `names`, filtered by `query`."""
        rows = [transaction_row(t, names.get(t.bank_uuid, t.bank_uuid[:8])) for t in transactions]
        self.sync(filter_rows(rows, query))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = event.row_key.value
        self.post_message(self.Highlighted(None if key is None else str(key)))


def timeline(txn: TransactionView, bank_name: str, location: str = "") -> Text:
    """Three lines: what and where; requested -> sent -> answered; outcome and details."""
    where = f"{bank_name} ({location})" if location else bank_name
    what = "open compartment " + str(txn.compartment_number) if txn.compartment_number else ""
    head = Text(f"{what or action_label(txn)} on {where}", style="bold")
    head.append(f"  ·  transaction {txn.transaction_id}", style="dim")
    steps = Text(f"requested {clock_time(txn.requested_at)} by {txn.requested_by}")
    if txn.requested_from:
        steps.append(f" ({truncate(txn.requested_from, 60)})", style="dim")
    steps.append(f"  →  sent {offset(txn.requested_at, txn.sent_at)}")
    answered = txn.first_seen_at if txn.first_seen_at else None
    steps.append(f"  →  answered {offset(txn.requested_at, answered)}")
    outcome = Text("result ")
    outcome.append_text(state_text(txn.status))
    outcome.append(f"  ·  latency {duration(txn.latency_seconds)}")
    outcome.append(f"  ·  duplicates {txn.duplicate_count}")
    if txn.error_code or txn.message:
        outcome.append("  ·  ")
        outcome.append(f"{txn.error_code or ''} {txn.message or ''}".strip(), style="bold red")
    if txn.late:
        outcome.append("  ·  answered after it had ended", style="magenta")
    if not txn.terminal:
        outcome.append(f"  ·  expires {stamp(txn.expires_at)}", style="dim")
    return Text("\n").join([head, steps, outcome])


class TransactionDetail(Static):
    """The timeline of one transaction (or a hint when none is selected)."""

    DEFAULT_CSS = """
    TransactionDetail { height: auto; min-height: 3; }
    """

    def show(self, txn: TransactionView | None, bank_name: str = "", location: str = "") -> None:
        """Show the timeline of `txn`; None shows a hint instead."""
        if txn is None:
            self.update(Text("no transaction selected", style="dim"))
        else:
            self.update(timeline(txn, bank_name, location))
