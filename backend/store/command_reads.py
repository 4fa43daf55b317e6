"""Reads of `command_transactions` for the sweeps and liveness: commands sent and never
answered (to ask again), and banks with a configuration push still open."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from backend.domain.command_status import OPEN_STATUSES, CommandStatus
from backend.store.tables import CommandTransactionRow


def unanswered(session: Session, now: datetime) -> list[CommandTransactionRow]:
    """Commands sent, not yet seen by their device and not expired, oldest first."""
    return list(
        session.execute(
            select(CommandTransactionRow)
            .where(col(CommandTransactionRow.status) == CommandStatus.SENT)
            .where(col(CommandTransactionRow.first_seen_at).is_(None))
            .where(col(CommandTransactionRow.expires_at) > now)
            .order_by(col(CommandTransactionRow.requested_at))
        ).scalars()
    )


def unanswered_of(session: Session, banks: Collection[str]) -> list[CommandTransactionRow]:
    """These banks' commands sent and not yet seen (expired ones included), oldest first;
    ``banks`` is one chunk (`batch_reads.chunks`)."""
    return list(
        session.execute(
            select(CommandTransactionRow)
            .where(col(CommandTransactionRow.locker_uuid).in_(banks))
            .where(col(CommandTransactionRow.status) == CommandStatus.SENT)
            .where(col(CommandTransactionRow.first_seen_at).is_(None))
            .order_by(col(CommandTransactionRow.requested_at))
        ).scalars()
    )


def config_in_flight(session: Session, banks: Collection[str]) -> set[str]:
    """Which of these banks (one chunk) have an `apply_config` command still open."""
    return set(
        session.execute(
            select(col(CommandTransactionRow.locker_uuid))
            .where(col(CommandTransactionRow.locker_uuid).in_(banks))
            .where(col(CommandTransactionRow.action) == "apply_config")
            .where(col(CommandTransactionRow.status).in_(OPEN_STATUSES))
        ).scalars()
    )
