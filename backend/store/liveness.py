"""The liveness table written set-wise (SQLAlchemy Core), for heartbeat batches.

A heartbeat batch touches one `bank_liveness` row per bank. Through the ORM that was
an identity-map object per row, attribute events per field and a unit-of-work flush
that diffs every object: most of the writer's CPU per heartbeat (issue 19). Here a
batch is one SELECT of the fields the next values depend on (the heartbeat count and
the smoothed clock offset), then one executemany UPDATE and, for banks heard for the
first time, one INSERT. Callers hold the write lock, so no other instance inserts the
same bank meanwhile (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlmodel import Session

from backend.store.batch_reads import chunks
from backend.store.tables import BankLivenessRow, table_of

TABLE: Table = table_of(BankLivenessRow)


@dataclass
class Liveness:
    """One bank's liveness as this batch leaves it."""

    bank_uuid: str
    stored: bool  # a row exists (UPDATE) or not yet (INSERT)
    heartbeats: int = 0
    clock_offset_seconds: float | None = None
    last_heartbeat_at: datetime | None = None
    device_timestamp: datetime | None = None
    uptime_seconds: float | None = None


def load(session: Session, banks: Collection[str]) -> dict[str, Liveness]:
    """The current liveness of `banks` (a fresh one for a bank without a row)."""
    found: dict[str, Liveness] = {}
    columns = (TABLE.c.bank_uuid, TABLE.c.heartbeats, TABLE.c.clock_offset_seconds)
    for chunk in chunks(banks):
        for uuid, count, offset in session.execute(
            select(*columns).where(TABLE.c.bank_uuid.in_(chunk))
        ):
            found[uuid] = Liveness(uuid, True, count or 0, offset)
    for uuid in banks:
        if uuid not in found:
            found[uuid] = Liveness(uuid, False)
    return found


_UPDATE = (
    update(TABLE)
    .where(TABLE.c.bank_uuid == bindparam("key"))
    .values(
        last_heartbeat_at=bindparam("last_heartbeat_at"),
        device_timestamp=bindparam("device_timestamp"),
        uptime_seconds=bindparam("uptime_seconds"),
        heartbeats=bindparam("heartbeats"),
        clock_offset_seconds=bindparam("clock_offset_seconds"),
    )
)


def save(session: Session, changed: Collection[Liveness]) -> None:
    """Write the changed rows: one executemany UPDATE, one INSERT for new banks."""
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    for row in changed:
        values = {
            "last_heartbeat_at": row.last_heartbeat_at,
            "device_timestamp": row.device_timestamp,
            "uptime_seconds": row.uptime_seconds,
            "heartbeats": row.heartbeats,
            "clock_offset_seconds": row.clock_offset_seconds,
        }
        if row.stored:
            updates.append({"key": row.bank_uuid, **values})
        else:
            inserts.append({"bank_uuid": row.bank_uuid, **values})
    if updates:
        session.execute(_UPDATE, updates)
    if inserts:
        session.execute(insert(TABLE), inserts)
