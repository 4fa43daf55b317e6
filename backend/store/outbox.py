"""The outbox: rows written with the events that cause them, drained by the relay."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from backend.domain.messages import OutboundMessage
from backend.store.tables import OutboxRow


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
