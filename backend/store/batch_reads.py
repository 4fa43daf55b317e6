"""Set-based reads for the batched write paths.

A batch of responses or heartbeats touches a few hundred rows. Loading them with one
SELECT per table up front puts them in the session's identity map, so the per-item
`Session.get` calls that follow (in the device service and the projectors) are answered
from memory instead of issuing one SELECT each, and no autoflush runs between items.
The identity map holds unchanged rows weakly: callers keep the returned list alive while
they work.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import or_, select, tuple_
from sqlmodel import Session, SQLModel

from backend.store.tables import (
    BankLivenessRow,
    CommandTransactionRow,
    CompartmentRow,
    LockerBankRow,
)

Row = TypeVar("Row", bound=SQLModel)
CHUNK = 400  # keys per IN list: far below every backend's bound-parameter limit


def chunks(values: Collection[Any]) -> Iterator[list[Any]]:
    items = list(values)
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def preload(session: Session, table: type[Row], keys: Collection[str]) -> list[Row]:
    """Load the rows of a table with a single-column primary key into the identity map."""
    column = next(iter(table.__table__.primary_key.columns))  # type: ignore[attr-defined]
    rows: list[Row] = []
    for chunk in chunks(keys):
        rows.extend(session.execute(select(table).where(column.in_(chunk))).scalars())
    return rows


def preload_responses(session: Session, keys: Iterable[tuple[str, str]]) -> list[SQLModel]:
    """Load what applying responses touches: the (bank, transaction) tracker rows, their
    compartments and their banks."""
    pairs = set(keys)
    txns: list[CommandTransactionRow] = []
    for chunk in chunks(pairs):
        txns.extend(
            session.execute(
                select(CommandTransactionRow).where(
                    tuple_(
                        CommandTransactionRow.locker_uuid, CommandTransactionRow.transaction_id
                    ).in_(chunk)
                )
            ).scalars()
        )
    held: list[SQLModel] = [*txns, *preload(session, LockerBankRow, {b for b, _ in pairs})]
    compartments = {
        (t.locker_uuid, t.compartment_number) for t in txns if t.compartment_number is not None
    }
    for chunk in chunks(compartments):
        held.extend(
            session.execute(
                select(CompartmentRow).where(
                    tuple_(CompartmentRow.bank_uuid, CompartmentRow.number).in_(chunk)
                )
            ).scalars()
        )
    return held


def silent_banks(session: Session, now: datetime) -> list[tuple[str, int]]:
    """Online banks whose last heartbeat is older than three of their intervals (or that
    never sent one). Only those rows are read: one query per distinct interval, instead of
    loading every online bank twice a second. Returns (uuid, heartbeat interval) pairs."""
    intervals = session.execute(
        select(LockerBankRow.heartbeat_interval_seconds)
        .where(LockerBankRow.status == "online")
        .distinct()
    ).scalars()
    silent: list[tuple[str, int]] = []
    for interval in list(intervals):
        cutoff = now - timedelta(seconds=3 * interval)
        silent.extend(
            (uuid, interval)
            for uuid in session.execute(
                select(LockerBankRow.uuid)
                .join(
                    BankLivenessRow, BankLivenessRow.bank_uuid == LockerBankRow.uuid, isouter=True
                )
                .where(LockerBankRow.status == "online")
                .where(LockerBankRow.heartbeat_interval_seconds == interval)
                .where(
                    or_(
                        BankLivenessRow.last_heartbeat_at.is_(None),  # type: ignore[union-attr]
                        BankLivenessRow.last_heartbeat_at < cutoff,  # type: ignore[operator]
                    )
                )
            ).scalars()
        )
    return silent
