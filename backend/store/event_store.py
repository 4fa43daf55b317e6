"""Append-only event store with optimistic concurrency and a gap-free tail.

Appends on PostgreSQL take a transaction-scoped advisory lock first, so rows
become visible in position order and a reader tailing `id > last` never skips
a row committed late. SQLite serializes writers by itself (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from backend.domain.events import DomainEvent, EventMetadata, event_from_payload
from backend.domain.timeutil import iso
from backend.store.change_feed import CHANNEL, CREDENTIAL_EVENT_TYPES
from backend.store.database import is_append_clash
from backend.store.driver_statements import DriverStatement, stamps
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


_FLAT = (str, int, bool, datetime, types.NoneType)


def _flat(annotation: Any) -> bool:
    """Whether a field of this type dumps (mode json) to a str, int, bool or None only."""
    if annotation in _FLAT:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str | bool | int) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return all(_flat(a) for a in typing.get_args(annotation))
    return False


_FLAT_MODELS: dict[type[BaseModel], bool] = {}


def flat_model(model: type[BaseModel]) -> bool:
    """Whether every field of the model dumps (mode json) to a str, int, bool or None."""
    flat = _FLAT_MODELS.get(model)
    if flat is None:
        flat = _FLAT_MODELS[model] = all(_flat(f.annotation) for f in model.model_fields.values())
    return flat


def dumps_model(value: dict[str, Any], model: type[BaseModel]) -> str:
    """`_dumps(value)` for a model's dump, by orjson when that gives the very same text.

    It does when every field dumps to a str, int, bool or None (no floats, whose text
    differs, nothing nested) and the text is printable ASCII (`json` escapes the rest).
    Anything else, or what orjson refuses (integers past 64 bits), takes `_dumps`."""
    if flat_model(model):
        try:
            out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
        else:
            if out.isascii() and b"\x7f" not in out:
                return out.decode()
    return _dumps(value)


def _iso_only(value: object) -> str:
    """orjson's `default` for `payload_json`: what `DomainEvent._ser` does to a datetime."""
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not a flat field")


def payload_json(event: DomainEvent) -> str:
    """`_dumps(event.payload())`, without the dump for a flat event (see `dumps_model`):
    its fields are its `__dict__` and the JSON dump only turns datetimes into `iso`."""
    if flat_model(type(event)):
        try:
            out = orjson.dumps(
                event.__dict__,
                option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME,
                default=_iso_only,
            )
        except TypeError:
            pass
        else:
            if out.isascii() and b"\x7f" not in out:
                return out.decode()
    return _dumps(event.payload())


EventRow = tuple[int, str, int, str, int, str, str, datetime]
"""A `stored_events` row in `_EVENT_COLUMNS` order: id, aggregate, version, event type and
version, payload and metadata JSON, `created_at`."""
_EVENTS = table_of(StoredEvent)
_EVENT_COLUMNS = (
    "id",
    "aggregate_uuid",
    "aggregate_version",
    "event_type",
    "event_version",
    "payload",
    "metadata",
    "created_at",
)
_INSERT = DriverStatement(
    insert(_EVENTS).values({name: bindparam(name) for name in _EVENT_COLUMNS}), _EVENT_COLUMNS
)
_TYPE = 3  # the event type's place in an `EventRow`


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
    pending: list[EventRow] | None = None,
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
    meta_json = dumps_model(metadata.model_dump(exclude_none=True), EventMetadata)
    rows: list[EventRow] = [
        (
            first_position + offset - 1,
            aggregate_uuid,
            expected_version + offset,
            event.event_type,
            event.event_version,
            payload_json(event),
            meta_json,
            event.occurred_at,
        )
        for offset, event in enumerate(events, start=1)
    ]
    if pending is None:
        write_rows(session, rows)
    else:
        pending.extend(rows)
    return [
        RecordedEvent(
            position=row[0],
            aggregate_uuid=aggregate_uuid,
            aggregate_version=row[2],
            event=event,
            metadata=metadata,
            created_at=event.occurred_at,
        )
        for row, event in zip(rows, events, strict=True)
    ]


def write_rows(session: Session, rows: list[EventRow]) -> None:
    """Insert event rows in one statement; a clash on the event store's unique keys is a
    lost race (AppendConflict)."""
    if not rows:
        return
    stamp = stamps(session)
    try:
        _INSERT.executemany(session, [(*row[:7], stamp(row[7])) for row in rows])
    except IntegrityError as exc:
        if not is_append_clash(exc):
            raise
        raise AppendConflict("events were appended to concurrently") from None
    if session.get_bind().dialect.name == "postgresql" and any(
        row[_TYPE] in CREDENTIAL_EVENT_TYPES for row in rows
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


_LAST_POSITION = select(func.max(_EVENTS.c.id))


def last_position(session: Session) -> int:
    """The newest stored position (0: none). Run on the session's connection, not through
    the ORM: every write transaction asks it first (the catch-up), and the ORM's execute
    (its context, an autoflush) cost more than the query (issue 19)."""
    return int(session.connection().execute(_LAST_POSITION).scalar() or 0)
