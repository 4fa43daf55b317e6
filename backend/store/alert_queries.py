"""Read side of the alerts: views, open counts per kind, resolutions due by time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlmodel import Session, col

from backend.domain.alerts import ALERT_KINDS
from backend.store.alert_projection import ALERT_EVENTS
from backend.store.event_store import RecordedEvent
from backend.store.tables import AlertRow, LockerBankRow
from backend.views import AlertView


def _resolved_at(row: AlertRow, now: datetime) -> datetime | None:
    if row.resolved_at is not None:
        return row.resolved_at
    if row.resolves_at is not None and row.resolves_at <= now:
        return row.resolves_at
    return None


def alert_view(row: AlertRow, bank_name: str, now: datetime) -> AlertView:
    resolved = _resolved_at(row, now)
    return AlertView(
        id=row.id,
        kind=row.kind,
        bank_uuid=row.bank_uuid,
        bank_name=bank_name,
        transaction_id=row.transaction_id,
        detail=row.detail,
        count=row.count,
        opened_at=row.opened_at,
        last_at=row.last_at,
        state="resolved" if resolved is not None else "open",
        resolved_at=resolved,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        ack_note=row.ack_note,
    )


def _open_clause(now: datetime) -> ColumnElement[bool]:
    return and_(
        col(AlertRow.resolved_at).is_(None),
        or_(col(AlertRow.resolves_at).is_(None), col(AlertRow.resolves_at) > now),
    )


def list_alerts(
    session: Session,
    now: datetime,
    include_resolved: bool = False,
    bank_uuid: str | None = None,
    limit: int = 200,
) -> list[AlertView]:
    """Open alerts, newest first (with `include_resolved`, every alert)."""
    stmt = select(AlertRow, col(LockerBankRow.name)).join(
        LockerBankRow,
        col(LockerBankRow.uuid) == col(AlertRow.bank_uuid),
        isouter=True,
    )
    if not include_resolved:
        stmt = stmt.where(_open_clause(now))
    if bank_uuid is not None:
        stmt = stmt.where(col(AlertRow.bank_uuid) == bank_uuid)
    stmt = stmt.order_by(col(AlertRow.last_at).desc(), col(AlertRow.id).desc()).limit(limit)
    return [alert_view(row, name or "", now) for row, name in session.execute(stmt).all()]


def alert_row(session: Session, alert_id: int) -> AlertRow | None:
    """The alert's row, to change it in a write transaction."""
    return session.get(AlertRow, alert_id)


def get_alert(session: Session, alert_id: int, now: datetime) -> AlertView | None:
    row = session.get(AlertRow, alert_id)
    if row is None:
        return None
    bank = session.get(LockerBankRow, row.bank_uuid)
    return alert_view(row, bank.name if bank else "", now)


def open_counts(session: Session, now: datetime) -> dict[str, int]:
    """Open alerts per kind (every kind present, 0 when none)."""
    counts: dict[str, int] = dict.fromkeys(ALERT_KINDS, 0)
    for (kind,) in session.execute(select(col(AlertRow.kind)).where(_open_clause(now))).all():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def resolved_between(session: Session, after: datetime, until: datetime) -> list[AlertView]:
    """Alerts that resolved by time (a bank online for a minute) in (after, until]."""
    stmt = (
        select(AlertRow, col(LockerBankRow.name))
        .join(LockerBankRow, col(LockerBankRow.uuid) == col(AlertRow.bank_uuid), isouter=True)
        .where(col(AlertRow.resolved_at).is_(None))
        .where(col(AlertRow.resolves_at) > after)
        .where(col(AlertRow.resolves_at) <= until)
    )
    return [alert_view(row, name or "", until) for row, name in session.execute(stmt).all()]


def changes_for(
    session: Session, recorded: list[RecordedEvent], now: datetime
) -> list[tuple[str, AlertView]]:
    """What these just-recorded events did to the alerts: ("opened" | "resolved", alert)."""
    marks = [
        (r.position, r.aggregate_uuid, r.event.occurred_at)
        for r in recorded
        if r.event_type in ALERT_EVENTS
    ]
    return [(change, alert) for _position, change, alert in changes_at(session, marks, now)]


def changes_at(
    session: Session, marks: list[tuple[int, str, datetime]], now: datetime
) -> list[tuple[int, str, AlertView]]:
    """For events given as (position, bank uuid, occurred_at): the alerts each opened or
    resolved, as (position, "opened" | "resolved", alert)."""
    changes: list[tuple[int, str, AlertView]] = []
    seen: set[tuple[str, int]] = set()

    def add(position: int, change: str, row: AlertRow | None) -> None:
        if row is None or (change, row.id) in seen:
            return
        seen.add((change, row.id))
        bank = session.get(LockerBankRow, row.bank_uuid)
        changes.append((position, change, alert_view(row, bank.name if bank else "", now)))

    for position, bank_uuid, at in marks:
        add(position, "opened", session.get(AlertRow, position))
        for row in session.execute(
            select(AlertRow)
            .where(col(AlertRow.bank_uuid) == bank_uuid)
            .where(col(AlertRow.resolved_at) == at)
        ).scalars():
            add(position, "resolved", row)
    return changes
