"""The outbox: rows written with the events that cause them, drained by the relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlmodel import Session, col

from backend.domain.messages import OutboundMessage
from backend.store.tables import OutboxRow, table_of


@dataclass(frozen=True)
class RelayItem:
    """An outbox row handed to the relay: read from the store, or handed over by the
    transaction that wrote it (`relay_items` of `UnitOfWork.queued`)."""

    id: int
    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    bank_uuid: str | None
    transaction_id: str | None
    expires_at: datetime | None


CARRIED = ("kind", "topic", "qos", "retain", "bank_uuid", "transaction_id", "expires_at")
"""The fields an outbox row carries unchanged from its message to the relay."""


def enqueue(session: Session, message: OutboundMessage, now: datetime) -> OutboxRow:
    row = OutboxRow(
        payload=message.payload.decode(),
        status="pending",
        created_at=now,
        available_at=now,
        **{name: getattr(message, name) for name in CARRIED},
    )
    session.add(row)
    return row


def relay_items(rows: Sequence[OutboxRow]) -> tuple[RelayItem, ...]:
    """The relay's view of outbox rows (flushed or read: their ids are set)."""
    return tuple(
        RelayItem(
            id=r.id or 0,
            payload=r.payload.encode(),
            **{name: getattr(r, name) for name in CARRIED},
        )
        for r in rows
    )


def pending(session: Session, now: datetime, limit: int = 100) -> list[OutboxRow]:
    """Rows due for publication, oldest first (order is what devices see)."""
    stmt = (
        select(OutboxRow)
        .where(col(OutboxRow.status) == "pending")
        .where((col(OutboxRow.available_at).is_(None)) | (col(OutboxRow.available_at) <= now))
        .order_by(col(OutboxRow.id))
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


@dataclass(frozen=True)
class DueRows:
    """A read of the due rows, and what it says of the rest of the outbox."""

    items: tuple[RelayItem, ...]
    complete: bool
    """Every pending row was due and is in ``items`` (none past the limit, none waiting
    for a retry time)."""
    last_id: int
    """The highest row id in the outbox at the read (0: none)."""


def due_rows(session: Session, now: datetime, limit: int) -> DueRows:
    """The due rows, oldest first, and whether they are all that is pending, in one read
    (the relay's handover needs to know that no row is left behind them)."""
    items = relay_items(pending(session, now, limit))
    waiting = (
        select(func.min(col(OutboxRow.id)))
        .where(col(OutboxRow.status) == "pending")
        .where(col(OutboxRow.available_at) > now)
        .scalar_subquery()
    )
    last, first_waiting = session.execute(select(func.max(col(OutboxRow.id)), waiting)).one()
    return DueRows(items, len(items) < limit and first_waiting is None, int(last or 0))


def depth(session: Session) -> int:
    stmt = select(func.count()).select_from(OutboxRow).where(col(OutboxRow.status) == "pending")
    return int(session.execute(stmt).scalar() or 0)


def mark(session: Session, row_id: int, **values: object) -> None:
    session.execute(update(OutboxRow).where(col(OutboxRow.id) == row_id).values(**values))


def queued_for(session: Session, bank_uuid: str, transaction_id: str) -> list[OutboxRow]:
    """Every outbox row of one command, oldest first (a re-ask copies the first)."""
    stmt = (
        select(OutboxRow)
        .where(col(OutboxRow.bank_uuid) == bank_uuid)
        .where(col(OutboxRow.transaction_id) == transaction_id)
        .order_by(col(OutboxRow.id))
    )
    return list(session.execute(stmt).scalars())


def drop_pending(session: Session, bank_uuid: str, transaction_id: str, why: str) -> None:
    """A command's still-pending rows get status ``why`` (they never go out)."""
    session.execute(
        update(OutboxRow)
        .where(col(OutboxRow.bank_uuid) == bank_uuid)
        .where(col(OutboxRow.transaction_id) == transaction_id)
        .where(col(OutboxRow.status) == "pending")
        .values(status=why)
    )


def mark_sent(
    session: Session, row_ids: Sequence[int], now: datetime, *, clear_payload: bool = False
) -> None:
    """Rows published: `sent`, one more attempt; a Core executemany (not the ORM's bulk
    by key). ``clear_payload``: a provisioning reply's password leaves the database."""
    if not row_ids:
        return
    table = table_of(OutboxRow)
    values: dict[str, Any] = {"status": "sent", "sent_at": now, "attempts": table.c.attempts + 1}
    if clear_payload:
        values["payload"] = ""
    sent = update(table).where(table.c.id == bindparam("row_id")).values(**values)
    session.execute(sent, [{"row_id": i} for i in row_ids])


def mark_failed(session: Session, row_id: int, error: str, retry_at: datetime) -> None:
    """A publish failed: one more attempt, the error, and when to try again."""
    mark(
        session,
        row_id,
        attempts=col(OutboxRow.attempts) + 1,
        last_error=error,
        available_at=retry_at,
    )
