"""Device answers to commands written set-wise (SQLAlchemy Core), for response batches.

Through the ORM a batch of responses hydrated a tracker, compartment and bank object per
response and projected each answer with attribute events and a flush that diffs every
object: most of the writer's CPU per response (issue 19). Here a batch is one SELECT of
the tracker columns the decision needs, as tuples; the caller decides (the rules stay in
`backend.domain`), records the events through the unit of work, and `save` writes the
tracker and the read models with one executemany per statement.

`save` projects exactly what the ORM projectors in `projections` do for the three events
an answer produces (`CompartmentOpened`, `ConfigApplied`, `CommandFailed`): keep the two in
step (`tests/integration/test_response_batch.py` compares them row for row). Alerts are
projected by `alert_projection` itself (rare: failures and late answers).
Callers hold the write lock, so what `load` reads is the committed state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table, bindparam, case, select, update
from sqlmodel import Session

from backend.domain.command_status import CommandStatus
from backend.domain.events import CommandFailed, CompartmentOpened, ConfigApplied, DomainEvent
from backend.store.alert_projection import ALERT_EVENTS, project_alerts
from backend.store.batch_reads import chunks
from backend.store.driver_statements import DriverStatement, Row, Stamps, stamps
from backend.store.event_store import RecordedEvent
from backend.store.tables import CommandTransactionRow, CompartmentRow, LockerBankRow, table_of
from backend.store.types import UTCDateTime

TXNS: Table = table_of(CommandTransactionRow)
COMPARTMENTS: Table = table_of(CompartmentRow)
BANKS: Table = table_of(LockerBankRow)

ANSWER_EVENTS: Final = (CompartmentOpened, ConfigApplied, CommandFailed)
"""The events `save` projects: what `LockerBank.record_response` decides."""


def projects(events: Iterable[DomainEvent]) -> bool:
    """Whether `save` projects every one of these events."""
    return all(isinstance(e, ANSWER_EVENTS) for e in events)


@dataclass
class Tracker:
    """One command's tracker row as this batch leaves it; `changes` are what to write."""

    bank_uuid: str
    transaction_id: str
    action: str
    status: str
    compartment_number: int | None
    first_seen_at: datetime | None
    duplicate_count: int
    changes: dict[str, Any] = field(default_factory=dict)

    def seen_first(self, now: datetime, payload_hash: str | None) -> None:
        self.first_seen_at = now
        self.changes.update(first_seen_at=now, last_seen_at=now, payload_hash=payload_hash)

    def seen_again(self, now: datetime) -> None:
        self.duplicate_count += 1
        self.changes.update(last_seen_at=now, duplicate_count=self.duplicate_count)


_LOAD = select(
    TXNS.c.locker_uuid,
    TXNS.c.transaction_id,
    TXNS.c.action,
    TXNS.c.status,
    TXNS.c.compartment_number,
    TXNS.c.first_seen_at,
    TXNS.c.duplicate_count,
).where(TXNS.c.transaction_id.in_(bindparam("tids", expanding=True)))


def load(session: Session, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Tracker]:
    """The tracker rows of these (bank, transaction) pairs; a missing pair has none.

    Looked up by transaction id alone (its own index) and kept when the pair is asked for:
    SQLite answers `(bank, transaction) IN (...)` by scanning the whole primary key, one
    pass over every command ever tracked per batch."""
    wanted = set(keys)
    found: dict[tuple[str, str], Tracker] = {}
    for chunk in chunks({tid for _bank, tid in wanted}):
        for bank, tid, action, status, number, first_seen, duplicates in session.execute(
            _LOAD, {"tids": chunk}
        ).all():
            if (bank, tid) in wanted:
                found[(bank, tid)] = Tracker(
                    bank, tid, action, status, number, first_seen, duplicates or 0
                )
    return found


_COMPARTMENT = (
    update(COMPARTMENTS)
    .where(COMPARTMENTS.c.bank_uuid == bindparam("k_bank"))
    .where(COMPARTMENTS.c.number == bindparam("k_number"))
)
_OPEN_CLEARED = case(  # the compartment's open command, if it is this one, is over
    (COMPARTMENTS.c.open_transaction_id == bindparam("k_tid"), None),
    else_=COMPARTMENTS.c.open_transaction_id,
)
# Rows are tuples in the order each statement binds them (`DriverStatement` checks it).
_CLEAR_OPEN = DriverStatement(
    _COMPARTMENT.values(open_transaction_id=_OPEN_CLEARED), ("k_tid", "k_bank", "k_number")
)
_OPENED = DriverStatement(  # `_CLEAR_OPEN` and the door opened, in one statement
    _COMPARTMENT.values(
        open_transaction_id=_OPEN_CLEARED,
        door_state=bindparam("v_state"),
        last_opened_at=bindparam("v_at"),
    ),
    ("v_state", "v_at", "k_tid", "k_bank", "k_number"),
)
_BANK_VERSION = DriverStatement(
    update(BANKS)
    .where(BANKS.c.uuid == bindparam("k_bank"))
    .values(version=bindparam("v_version"), updated_at=bindparam("v_at")),
    ("v_at", "v_version", "k_bank"),
)
_CONFIG_APPLIED = DriverStatement(
    update(BANKS)
    .where(BANKS.c.uuid == bindparam("k_bank"))
    .values(applied_config_hash=bindparam("v_hash"), config_state=bindparam("v_state")),
    ("v_hash", "v_state", "k_bank"),
)
_CONFIG_FAILED = DriverStatement(  # `_config_push_ended`: a failed pending push leaves drift
    update(BANKS)
    .where(BANKS.c.uuid == bindparam("k_bank"))
    .values(
        config_state=case(
            (BANKS.c.config_state == bindparam("k_pending"), bindparam("v_state")),
            else_=BANKS.c.config_state,
        )
    ),
    ("k_pending", "v_state", "k_bank"),
)
_STAMPED: Final = frozenset(c.name for c in TXNS.columns if isinstance(c.type, UTCDateTime))
"""The tracker columns that hold datetimes (bound through `Stamps`)."""


class _TrackerUpdate:
    """The UPDATE of one set of changed tracker columns (sorted), keyed by the row."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.stamped = tuple(name in _STAMPED for name in columns)
        self.statement = DriverStatement(
            update(TXNS)
            .where(TXNS.c.locker_uuid == bindparam("k_bank"))
            .where(TXNS.c.transaction_id == bindparam("k_tid"))
            .values({name: bindparam(f"v_{name}") for name in columns}),
            (*(f"v_{name}" for name in columns), "k_bank", "k_tid"),
        )


_TRACKER_UPDATES: dict[tuple[str, ...], _TrackerUpdate] = {}


def _tracker_update(columns: tuple[str, ...]) -> _TrackerUpdate:
    found = _TRACKER_UPDATES.get(columns)
    if found is None:
        found = _TRACKER_UPDATES[columns] = _TrackerUpdate(columns)
    return found


def save(
    session: Session,
    trackers: Iterable[Tracker],
    answered: Sequence[tuple[Tracker, RecordedEvent]],
) -> None:
    """Project the recorded answers (in order) and write every changed tracker row.

    Mirrors `projections._opened`, `_config_applied`, `_failed` with `_finish_answer`,
    `_finish_txn`, `_config_push_ended`, and `project`'s bank version. Per row the last
    answer of the batch wins, as in the ORM's flush. The compartment's open transaction is
    only ever cleared (each answer for its own transaction), so those updates commute; a
    failed config push only changes a bank still `pending`, which no applied config of the
    same batch leaves, so `_CONFIG_APPLIED` before `_CONFIG_FAILED` ends as the ORM does.
    """
    stamp = stamps(session)
    clear: list[Row] = []
    opened: list[Row] = []
    versions: dict[str, Row] = {}
    applied: dict[str, Row] = {}
    failed: dict[str, Row] = {}
    for tracker, r in answered:
        e = r.event
        assert isinstance(e, ANSWER_EVENTS), f"{r.event_type} is not an answer"
        bank = r.aggregate_uuid
        if e.after_expiry:
            status = CommandStatus.LATE
        elif isinstance(e, CommandFailed):
            status = CommandStatus.ERROR
        else:
            status = CommandStatus.SUCCESS
        tracker.status = status
        tracker.changes.update(
            status=status, completed_at=e.occurred_at, late=e.late, message=e.message
        )
        clear_at = tracker.compartment_number
        if isinstance(e, CompartmentOpened):
            number = e.compartment_number
            tid = e.transaction_id if clear_at == number else None
            opened.append(("open", stamp(e.occurred_at), tid, bank, number))
            if clear_at == number:
                clear_at = None  # cleared by `_OPENED`
        if clear_at is not None:
            clear.append((e.transaction_id, bank, clear_at))
        if isinstance(e, ConfigApplied):
            tracker.changes["applied_config_hash"] = e.applied_config_hash
            state = "in_sync" if e.in_sync else "drifted"
            applied[bank] = (e.applied_config_hash, state, bank)
        elif isinstance(e, CommandFailed):
            tracker.changes["error_code"] = e.error_code
            if e.action == "apply_config":
                failed[bank] = ("pending", "drifted", bank)
        versions[bank] = (stamp(e.occurred_at), r.aggregate_version, bank)
        if r.event_type in ALERT_EVENTS:
            project_alerts(session, r)
    _write_trackers(session, trackers, stamp)
    _CLEAR_OPEN.executemany(session, clear)
    _OPENED.executemany(session, opened)
    _BANK_VERSION.executemany(session, list(versions.values()))
    _CONFIG_APPLIED.executemany(session, list(applied.values()))
    _CONFIG_FAILED.executemany(session, list(failed.values()))


def _write_trackers(session: Session, trackers: Iterable[Tracker], stamp: Stamps) -> None:
    """One executemany per set of changed columns (usually one or two)."""
    shapes: dict[tuple[str, ...], list[Row]] = {}
    for t in trackers:
        changes = t.changes
        if changes:
            shape = _tracker_update(tuple(sorted(changes)))
            row = [
                stamp(changes[name]) if stamped else changes[name]
                for name, stamped in zip(shape.columns, shape.stamped, strict=True)
            ]
            row += (t.bank_uuid, t.transaction_id)
            shapes.setdefault(shape.columns, []).append(tuple(row))
    for columns, rows in shapes.items():
        _TRACKER_UPDATES[columns].statement.executemany(session, rows)
