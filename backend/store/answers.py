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

from sqlalchemy import Table, bindparam, case, select, tuple_, update
from sqlmodel import Session

from backend.domain.command_status import CommandStatus
from backend.domain.events import CommandFailed, CompartmentOpened, ConfigApplied, DomainEvent
from backend.store.alert_projection import ALERT_EVENTS, project_alerts
from backend.store.batch_reads import chunks
from backend.store.event_store import RecordedEvent
from backend.store.tables import CommandTransactionRow, CompartmentRow, LockerBankRow, table_of

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


def load(session: Session, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Tracker]:
    """The tracker rows of these (bank, transaction) pairs; a missing pair has none."""
    c = TXNS.c
    columns = (
        c.locker_uuid,
        c.transaction_id,
        c.action,
        c.status,
        c.compartment_number,
        c.first_seen_at,
        c.duplicate_count,
    )
    found: dict[tuple[str, str], Tracker] = {}
    for chunk in chunks(keys):
        for row in session.execute(
            select(*columns).where(tuple_(c.locker_uuid, c.transaction_id).in_(chunk))
        ):
            bank, tid, action, status, number, first_seen, duplicates = row
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
_CLEAR_OPEN = _COMPARTMENT.values(open_transaction_id=_OPEN_CLEARED)
_OPENED = _COMPARTMENT.values(  # `_CLEAR_OPEN` and the door opened, in one statement
    open_transaction_id=_OPEN_CLEARED,
    door_state=bindparam("v_state"),
    last_opened_at=bindparam("v_at"),
)
_BANK_VERSION = (
    update(BANKS)
    .where(BANKS.c.uuid == bindparam("k_bank"))
    .values(version=bindparam("v_version"), updated_at=bindparam("v_at"))
)
_CONFIG_APPLIED = (
    update(BANKS)
    .where(BANKS.c.uuid == bindparam("k_bank"))
    .values(applied_config_hash=bindparam("v_hash"), config_state=bindparam("v_state"))
)
_CONFIG_FAILED = (  # `_config_push_ended`: a pending push that failed leaves the bank drifted
    update(BANKS)
    .where(BANKS.c.uuid == bindparam("k_bank"))
    .values(
        config_state=case(
            (BANKS.c.config_state == bindparam("k_pending"), bindparam("v_state")),
            else_=BANKS.c.config_state,
        )
    )
)


def _txn_update(columns: tuple[str, ...]) -> Any:
    return (
        update(TXNS)
        .where(TXNS.c.locker_uuid == bindparam("k_bank"))
        .where(TXNS.c.transaction_id == bindparam("k_tid"))
        .values({name: bindparam(f"v_{name}") for name in columns})
    )


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
    clear: list[dict[str, Any]] = []
    opened: list[dict[str, Any]] = []
    versions: dict[str, dict[str, Any]] = {}
    applied: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
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
            opened.append(
                {
                    "k_bank": bank,
                    "k_number": e.compartment_number,
                    "k_tid": e.transaction_id if clear_at == e.compartment_number else None,
                    "v_state": "open",
                    "v_at": e.occurred_at,
                }
            )
            if clear_at == e.compartment_number:
                clear_at = None  # cleared by `_OPENED`
        if clear_at is not None:
            clear.append({"k_bank": bank, "k_number": clear_at, "k_tid": e.transaction_id})
        if isinstance(e, ConfigApplied):
            tracker.changes["applied_config_hash"] = e.applied_config_hash
            applied[bank] = {
                "k_bank": bank,
                "v_hash": e.applied_config_hash,
                "v_state": "in_sync" if e.in_sync else "drifted",
            }
        elif isinstance(e, CommandFailed):
            tracker.changes["error_code"] = e.error_code
            if e.action == "apply_config":
                failed[bank] = {"k_bank": bank, "k_pending": "pending", "v_state": "drifted"}
        versions[bank] = {"k_bank": bank, "v_version": r.aggregate_version, "v_at": e.occurred_at}
        if r.event_type in ALERT_EVENTS:
            project_alerts(session, r)
    _write_trackers(session, trackers)
    for statement, params in (
        (_CLEAR_OPEN, clear),
        (_OPENED, opened),
        (_BANK_VERSION, list(versions.values())),
        (_CONFIG_APPLIED, list(applied.values())),
        (_CONFIG_FAILED, list(failed.values())),
    ):
        if params:
            session.execute(statement, params)


def _write_trackers(session: Session, trackers: Iterable[Tracker]) -> None:
    """One executemany per set of changed columns (usually one or two)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for t in trackers:
        if t.changes:
            columns = tuple(sorted(t.changes))
            params = {"k_bank": t.bank_uuid, "k_tid": t.transaction_id}
            params.update({f"v_{name}": value for name, value in t.changes.items()})
            shapes.setdefault(columns, []).append(params)
    for columns, rows in shapes.items():
        session.execute(_txn_update(columns), rows)
