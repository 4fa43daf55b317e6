"""The alert list: one row per alert (keyed by its id), newest first; states in words."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from rich.text import Text

from backend.views import AlertView
from widgets.formatting import age, clock_time, stamp, truncate
from widgets.keyed_table import KeyedTable, Row, filter_rows


def alert_state(alert: AlertView) -> Text:
    """`open`, `seen` (acknowledged, still open) or `resolved`, in words."""
    if alert.state == "resolved":
        return Text("resolved", style="green")
    if alert.acknowledged_at is not None:
        return Text("seen", style="yellow")
    return Text("open", style="bold red")


def alert_row(alert: AlertView, now: datetime) -> Row:
    seen = ""
    if alert.acknowledged_at is not None:
        seen = f"{alert.acknowledged_by or ''} {alert.ack_note or ''}".strip()
    return Row(
        str(alert.id),
        (
            Text(clock_time(alert.opened_at)),
            alert_state(alert),
            Text(alert.label, style="bold"),
            Text(truncate(alert.bank_name or alert.bank_uuid[:8], 200)),
            Text(str(alert.count), style="yellow" if alert.count > 1 else ""),
            Text(age(alert.last_at, now)),
            Text(truncate(alert.detail + (f" · seen by {seen}" if seen else ""), 300)),
        ),
        {
            "opened": stamp(alert.opened_at),
            "status": alert_state(alert).plain,
            "state": alert_state(alert).plain,
            "kind": f"{alert.kind} {alert.label}",
            "event": f"{alert.kind} {alert.label}",
            "bank": f"{alert.bank_name} {alert.bank_uuid}",
            "count": str(alert.count),
            "detail": f"{alert.detail} {seen} {alert.transaction_id or ''}",
            "id": str(alert.id),
        },
        {
            "opened": alert.opened_at.timestamp(),
            "count": alert.count,
            "last": -alert.last_at.timestamp(),
        },
    )


class AlertTable(KeyedTable):
    """Alerts, newest first (open ones unacknowledged in bold red words)."""

    FLEX_MIN = 8
    FLEX_WEIGHTS: ClassVar[dict[str, int]] = {"bank": 1, "detail": 3}
    COLUMNS = (
        ("opened", "opened", 8),
        ("state", "state", 8),
        ("kind", "alert", 16),
        ("bank", "bank", None),
        ("count", "n", 3),
        ("last", "last", 8),
        ("detail", "detail", None),
    )

    def show(self, alerts: Sequence[AlertView], now: datetime, query: str = "") -> None:
        self.sync(filter_rows([alert_row(a, now) for a in alerts], query))
