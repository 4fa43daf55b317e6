"""The stored-event log: one row per event, keyed by its position in the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from backend import search
from backend.views import EventView
from widgets.formatting import clock_time, stamp, truncate
from widgets.keyed_table import KeyedTable, Row, filter_rows

EVENT_STYLES = {
    "CommandFailed": "bold red",
    "CommandTimedOut": "bold red",
    "CommandExpired": "magenta",
    "LockerBankWentOffline": "bold red",
    "LockerBankCameOnline": "green",
    "CompartmentOpened": "green",
    "ProvisioningRejected": "yellow",
    "CredentialsRevoked": "magenta",
}


def _action(payload: Mapping[str, Any]) -> str:
    return {"open_compartment": "open", "apply_config": "config"}.get(
        str(payload.get("action", "")), str(payload.get("action", ""))
    )


def _failure(payload: Mapping[str, Any]) -> str:
    code, message = payload.get("error_code") or "", payload.get("message") or ""
    return f"{_action(payload)}: {code} {message}"


SUMMARIES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "LockerBankCreated": lambda p: f"{p.get('name', '')}, {len(p.get('compartments', []))} doors",
    "ProvisioningTokenIssued": lambda p: f"token expires {str(p.get('expires_at', ''))[:16]}",
    "LockerBankProvisioned": lambda p: f"client {p.get('client_id', '')}",
    "ProvisioningRejected": lambda p: f"client {p.get('client_id', '')}: {p.get('reason', '')}",
    "CredentialsRevoked": lambda p: str(p.get("reason") or "credentials revoked"),
    "CompartmentOpeningRequested": lambda p: f"#{p.get('compartment_number')}",
    "ConfigApplyRequested": lambda p: f"{len(p.get('compartments', []))} doors",
    "CommandSent": _action,
    "CompartmentOpened": lambda p: (
        f"#{p.get('compartment_number')}" + (" late" if p.get("late") else "")
    ),
    "CommandFailed": lambda p: _failure(p),
    "CommandTimedOut": _action,
    "CommandExpired": _action,
    "ConfigApplied": lambda p: "in sync" if p.get("in_sync") else "drifted",
    "LockerBankWentOffline": lambda p: str(p.get("reason", "")).replace("_", " "),
    "DoorStateChanged": lambda p: f"#{p.get('compartment_number')} {p.get('state', '')}",
    "QrScanned": lambda p: f"scanner {p.get('scanner', '')}",
}


def summary(event: EventView) -> str:
    """A short, human line for the event's payload."""
    describe = SUMMARIES.get(event.event_type)
    if describe is not None:
        return describe(event.payload).strip()
    fields = (f"{k}={v}" for k, v in event.payload.items() if k != "occurred_at")
    return " ".join(fields)


def event_values(event: EventView, bank_name: str) -> dict[str, str]:
    """Every searchable field of the event, in full (type, bank, actor, whole payload)."""
    values = search.event_values(
        event.event_type,
        event.aggregate_uuid,
        bank_name,
        event.payload,
        event.metadata,
        event.position,
    )
    values["time"] = stamp(event.created_at)
    values["details"] = f"{summary(event)} {values['details']}"
    return values


def event_row(event: EventView, bank_name: str) -> Row:
    """The log row of one event."""
    return Row(
        str(event.position),
        (
            Text(str(event.position), justify="right"),
            Text(clock_time(event.created_at)),
            Text(event.event_type, style=EVENT_STYLES.get(event.event_type, "")),
            Text(truncate(bank_name, 200)),
            Text(truncate(str(event.metadata.get("actor", "")), 200)),
            Text(truncate(summary(event), 200)),
        ),
        event_values(event, bank_name),
        {"position": event.position, "time": event.position},
    )


class EventTable(KeyedTable):
    """Stored events in position order (oldest at the top, the newest at the bottom)."""

    FLEX_MIN = 7
    FLEX_MAX = 100
    FLEX_WEIGHTS: ClassVar[dict[str, int]] = {"type": 2, "bank": 1, "details": 4}

    COLUMNS = (
        ("position", "pos", 5),
        ("time", "time", 8),
        ("type", "event", None),
        ("bank", "bank", None),
        ("actor", "by", 7),
        ("details", "details", None),
    )

    BINDINGS = [Binding("enter", "select_cursor", "Event detail")]

    @dataclass
    class Chosen(Message):
        """Enter (or a click on a highlighted row) on an event."""

        position: int

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(int(event.row_key.value)))

    def show(self, events: Sequence[EventView], names: Mapping[str, str], query: str = "") -> None:
        """Show `events` (position order), bank names from `names`, filtered by `query`."""
        rows = [event_row(e, names.get(e.aggregate_uuid, e.aggregate_uuid[:8])) for e in events]
        self.sync(filter_rows(rows, query))

    def follow(self) -> None:
        """Keep the newest event in view (cursor on the last row)."""
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
            self.call_after_refresh(self._sync_scrollbar)
