"""Housekeeping deletes: dedup keys and rejected messages past their time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlmodel import Session, col

from backend.store.tables import ProcessedMessageRow, RejectedMessageRow


def prune(session: Session, *, processed_before: datetime, rejected_before: datetime) -> None:
    """Drop dedup keys processed before ``processed_before`` and rejected messages
    received before ``rejected_before``."""
    session.execute(
        delete(ProcessedMessageRow).where(col(ProcessedMessageRow.processed_at) < processed_before)
    )
    session.execute(
        delete(RejectedMessageRow).where(col(RejectedMessageRow.received_at) < rejected_before)
    )
