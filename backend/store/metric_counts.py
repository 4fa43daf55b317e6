"""Counts over the read models for `/metrics` (`backend.http.prometheus`)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session, col

from backend.domain.clock_offset import SKEW_LIMIT
from backend.store.tables import BankLivenessRow, CommandTransactionRow, LockerBankRow

__all__ = [
    "bank_status_counts",
    "clock_skewed_banks",
    "read_model_counts",
    "transaction_counts",
]


def bank_status_counts(session: Session) -> dict[str, int]:
    """Banks per status."""
    return {
        str(status): int(n)
        for status, n in session.execute(
            select(col(LockerBankRow.status), func.count()).group_by(col(LockerBankRow.status))
        )
    }


def transaction_counts(session: Session) -> dict[tuple[str, str], int]:
    """Command transactions per (action, status)."""
    return {
        (str(action), str(status)): int(n)
        for action, status, n in session.execute(
            select(
                col(CommandTransactionRow.action),
                col(CommandTransactionRow.status),
                func.count(),
            ).group_by(col(CommandTransactionRow.action), col(CommandTransactionRow.status))
        )
    }


def clock_skewed_banks(session: Session) -> int:
    """Banks whose estimated clock offset is beyond the limit."""
    limit = SKEW_LIMIT
    column = col(BankLivenessRow.clock_offset_seconds)
    return int(
        session.execute(
            select(func.count()).where((column > limit) | (column < -limit))
        ).scalar_one()
    )


def read_model_counts(session: Session) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Banks per status and transactions per (action, status), from one snapshot."""
    return bank_status_counts(session), transaction_counts(session)
