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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, or_, select, tuple_
from sqlmodel import Session, SQLModel, col

from backend.domain.command_status import OPEN_STATUSES, CommandStatus
from backend.domain.dialect import replays_stored_answers
from backend.store.tables import (
    BankLivenessRow,
    CommandTransactionRow,
    CompartmentRow,
    LockerBankRow,
    OutboxRow,
    table_of,
)

Row = TypeVar("Row", bound=SQLModel)
CHUNK = 400  # keys per IN list: far below every backend's bound-parameter limit


def chunks(values: Collection[Any]) -> Iterator[list[Any]]:
    items = list(values)
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def preload(session: Session, table: type[Row], keys: Collection[str]) -> list[Row]:
    """Load the rows of a table with a single-column primary key into the identity map."""
    column = next(iter(table_of(table).primary_key.columns))
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
                        col(CommandTransactionRow.locker_uuid),
                        col(CommandTransactionRow.transaction_id),
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
                    tuple_(col(CompartmentRow.bank_uuid), col(CompartmentRow.number)).in_(chunk)
                )
            ).scalars()
        )
    return held


def silent_banks(session: Session, now: datetime) -> list[tuple[str, int]]:
    """Online banks whose last heartbeat is older than three of their intervals (or that
    never sent one). Only those rows are read: one query per distinct interval, instead of
    loading every online bank twice a second. Returns (uuid, heartbeat interval) pairs."""
    intervals = session.execute(
        select(col(LockerBankRow.heartbeat_interval_seconds))
        .where(col(LockerBankRow.status) == "online")
        .distinct()
    ).scalars()
    silent: list[tuple[str, int]] = []
    for interval in list(intervals):
        cutoff = now - timedelta(seconds=3 * interval)
        silent.extend(
            (uuid, interval)
            for uuid in session.execute(
                select(col(LockerBankRow.uuid))
                .join(
                    BankLivenessRow,
                    col(BankLivenessRow.bank_uuid) == col(LockerBankRow.uuid),
                    isouter=True,
                )
                .where(col(LockerBankRow.status) == "online")
                .where(col(LockerBankRow.heartbeat_interval_seconds) == interval)
                .where(
                    or_(
                        col(BankLivenessRow.last_heartbeat_at).is_(None),
                        col(BankLivenessRow.last_heartbeat_at) < cutoff,
                    )
                )
            ).scalars()
        )
    return silent


def due_commands(
    session: Session, now: datetime, sent_before: datetime
) -> list[CommandTransactionRow]:
    """Open commands the sweep may have to act on: expired, or sent before `sent_before`
    (the later of the timeout and re-ask cutoffs; a re-ask never goes out before the first
    send, so a command first sent after it cannot be due for either). Commands still well
    within their time are not read at all."""
    return list(
        session.execute(
            select(CommandTransactionRow)
            .where(col(CommandTransactionRow.status).in_(OPEN_STATUSES))
            .where(
                or_(
                    col(CommandTransactionRow.expires_at) <= now,
                    and_(
                        col(CommandTransactionRow.status) == CommandStatus.SENT,
                        col(CommandTransactionRow.sent_at) <= sent_before,
                    ),
                )
            )
            .order_by(col(CommandTransactionRow.requested_at))
        ).scalars()
    )


@dataclass(frozen=True)
class LatestSend:
    """The newest outbox row of a command: its status and when it went out (or was queued)."""

    status: str
    at: datetime


def latest_outbox(
    session: Session, keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], LatestSend]:
    """The newest outbox row per (bank, transaction), for many commands in a few queries."""
    newest: dict[tuple[str, str], tuple[int, LatestSend]] = {}
    for chunk in chunks(keys):
        rows = session.execute(
            select(
                col(OutboxRow.bank_uuid),
                col(OutboxRow.transaction_id),
                col(OutboxRow.id),
                col(OutboxRow.status),
                col(OutboxRow.sent_at),
                col(OutboxRow.created_at),
            ).where(tuple_(col(OutboxRow.bank_uuid), col(OutboxRow.transaction_id)).in_(chunk))
        )
        for bank, tid, row_id, status, sent_at, created_at in rows:
            key = (bank, tid)
            if key not in newest or row_id > newest[key][0]:
                newest[key] = (row_id, LatestSend(status, sent_at or created_at))
    return {key: send for key, (_id, send) in newest.items()}


def replays_unavailable(session: Session, banks: set[str]) -> set[str]:
    """The banks whose devices never re-send a stored answer (dialect `openlocker`)."""
    found: set[str] = set()
    for chunk in chunks(sorted(banks)):
        rows = session.execute(
            select(col(LockerBankRow.uuid), col(LockerBankRow.dialect)).where(
                col(LockerBankRow.uuid).in_(chunk)
            )
        ).all()
        found.update(uuid for uuid, dialect in rows if not replays_stored_answers(dialect))
    return found
