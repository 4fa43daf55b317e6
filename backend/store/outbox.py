"""The outbox: rows written with the events that cause them, drained by the relay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlmodel import Session, col

from backend.domain.messages import OutboundMessage
from backend.store.tables import OutboxRow, table_of


def enqueue(session: Session, message: OutboundMessage, now: datetime) -> OutboxRow:
    row = OutboxRow(
        kind=message.kind,
        topic=message.topic,
        payload=message.payload.decode(),
        qos=message.qos,
        retain=message.retain,
        bank_uuid=message.bank_uuid,
        transaction_id=message.transaction_id,
        status="pending",
        created_at=now,
        available_at=now,
        expires_at=message.expires_at,
    )
    session.add(row)
    return row


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
