"""Append-only event store with optimistic concurrency and a gap-free tail.

Appends on PostgreSQL take a transaction-scoped advisory lock first, so rows
become visible in position order and a reader tailing `id > last` never skips
a row committed late. SQLite serializes writers by itself (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from backend.domain.events import DomainEvent, EventMetadata, event_from_payload
from backend.store.change_feed import CHANNEL, CREDENTIAL_EVENT_TYPES
from backend.store.database import is_append_clash
from backend.store.errors import AppendConflict
from backend.store.tables import StoredEvent, table_of

APPEND_LOCK_KEY = 0x4C4F434B  # "LOCK": one advisory lock serializes all appends


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: its position, aggregate version and metadata."""

    position: int
    aggregate_uuid: str
    aggregate_version: int
    event: DomainEvent
    metadata: EventMetadata
    created_at: datetime

    @property
    def event_type(self) -> str:
        return self.event.event_type


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def lock_appends(session: Session) -> None:
    """Serialize appends (PostgreSQL); a no-op on SQLite whose writers are serialized."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK_KEY})


def current_version(session: Session, aggregate_uuid: str) -> int:
    stmt = select(func.max(col(StoredEvent.aggregate_version))).where(
        col(StoredEvent.aggregate_uuid) == aggregate_uuid
    )
    return int(session.execute(stmt).scalar() or 0)


def append(
    session: Session,
    aggregate_uuid: str,
    expected_version: int,
    events: Sequence[DomainEvent],
    metadata: EventMetadata,
    *,
    verify: bool = True,
    first_position: int | None = None,
    pending: list[dict[str, Any]] | None = None,
) -> list[RecordedEvent]:
    """Append events after `expected_version`; raise AppendConflict if someone was first.

    Positions are assigned here, under the write lock, as the next after the newest stored
    one, so they are gap-free and in commit order on every backend. `verify=False` skips the
    version query for callers that caught up under the write lock (the unit of work); such a
    caller also passes `first_position` (it tracks the tail itself) and a `pending` list that
    collects the rows, to write a whole batch with one `write_rows` (where the unique
    (aggregate, version) index still refuses a stale append).
    """
    if not events:
        return []
    if first_position is None:
        lock_appends(session)
        first_position = last_position(session) + 1
    # else: the caller holds the write lock and tracks the tail (the unit of work); taking
    # the lock again would be one more statement per append, and an autoflush with it.
    if verify:
        actual = current_version(session, aggregate_uuid)
        if actual != expected_version:
            raise AppendConflict(
                f"bank {aggregate_uuid} is at version {actual}, expected {expected_version}"
            )
    meta_json = _dumps(metadata.model_dump(exclude_none=True))
    rows: list[dict[str, Any]] = [
        {
            "id": first_position + offset - 1,
            "aggregate_uuid": aggregate_uuid,
            "aggregate_version": expected_version + offset,
            "event_type": event.event_type,
            "event_version": event.event_version,
            "payload": _dumps(event.payload()),
            "metadata": meta_json,
            "created_at": event.occurred_at,
        }
        for offset, event in enumerate(events, start=1)
    ]
    if pending is None:
        write_rows(session, rows)
    else:
        pending.extend(rows)
    return [
        RecordedEvent(
            position=row["id"],
            aggregate_uuid=aggregate_uuid,
            aggregate_version=row["aggregate_version"],
            event=event,
            metadata=metadata,
            created_at=event.occurred_at,
        )
        for row, event in zip(rows, events, strict=True)
    ]


def write_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert event rows in one statement; a clash on the event store's unique keys is a
    lost race (AppendConflict)."""
    if not rows:
        return
    try:
        session.execute(insert(table_of(StoredEvent)), rows)
    except IntegrityError as exc:
        if not is_append_clash(exc):
            raise
        raise AppendConflict("events were appended to concurrently") from None
    if session.get_bind().dialect.name == "postgresql" and any(
        row["event_type"] in CREDENTIAL_EVENT_TYPES for row in rows
    ):
        # Delivered at commit to every listening hook and instance (backend.store.change_feed).
        session.execute(text(f"NOTIFY {CHANNEL}"))


def _recorded(row: StoredEvent, event: DomainEvent, metadata: EventMetadata) -> RecordedEvent:
    assert row.id is not None
    return RecordedEvent(
        position=row.id,
        aggregate_uuid=row.aggregate_uuid,
        aggregate_version=row.aggregate_version,
        event=event,
        metadata=metadata,
        created_at=row.created_at,
    )


def decode(row: StoredEvent) -> RecordedEvent:
    """A stored row back to a typed event."""
    event = event_from_payload(row.event_type, json.loads(row.payload), row.event_version)
    metadata = EventMetadata.model_validate(json.loads(row.event_metadata))
    return _recorded(row, event, metadata)


def load(session: Session, aggregate_uuid: str, after_version: int = 0) -> list[RecordedEvent]:
    """The events of one aggregate after a version, in order."""
    stmt = (
        select(StoredEvent)
        .where(col(StoredEvent.aggregate_uuid) == aggregate_uuid)
        .where(col(StoredEvent.aggregate_version) > after_version)
        .order_by(col(StoredEvent.aggregate_version))
    )
    return [decode(row) for row in session.execute(stmt).scalars()]


def read_after(session: Session, position: int, limit: int = 500) -> list[RecordedEvent]:
    """Events with a global position greater than `position`, oldest first."""
    stmt = (
        select(StoredEvent)
        .where(col(StoredEvent.id) > position)
        .order_by(col(StoredEvent.id))
        .limit(limit)
    )
    return [decode(row) for row in session.execute(stmt).scalars()]


def read_before(
    session: Session, position: int | None, limit: int = 500, aggregate_uuid: str | None = None
) -> list[RecordedEvent]:
    """Up to `limit` events before `position` (None: the newest), newest first; only those
    of `aggregate_uuid` when given."""
    stmt = select(StoredEvent)
    if position is not None:
        stmt = stmt.where(col(StoredEvent.id) < position)
    if aggregate_uuid is not None:
        stmt = stmt.where(col(StoredEvent.aggregate_uuid) == aggregate_uuid)
    stmt = stmt.order_by(col(StoredEvent.id).desc()).limit(limit)
    return [decode(row) for row in session.execute(stmt).scalars()]


def last_position(session: Session) -> int:
    return int(session.execute(select(func.max(col(StoredEvent.id)))).scalar() or 0)
