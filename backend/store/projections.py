"""Projectors: keep the read models in step with the events, in the append transaction.

Every projector is a function of the event alone (times come from the event),
so replaying all events into empty tables (`rebuild`) gives identical rows. New rows
are only added to the session: a later lookup of one in the same transaction is a
query, and the session autoflushes before it, so no projector flushes by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from sqlalchemy import delete, func, select
from sqlmodel import Session, SQLModel, col

from backend.domain.bank import desired_hash
from backend.domain.command_status import CommandStatus
from backend.domain.dialect import effective_dialect
from backend.domain.events import (
    CommandExpired,
    CommandFailed,
    CommandSent,
    CommandTimedOut,
    CompartmentOpened,
    CompartmentOpeningRequested,
    CompartmentSpec,
    ConfigApplied,
    ConfigApplyRequested,
    CredentialsRevoked,
    DomainEvent,
    DoorStateChanged,
    LockerBankCameOnline,
    LockerBankCreated,
    LockerBankProvisioned,
    LockerBankUpdated,
    LockerBankWentOffline,
    ProvisioningTokenIssued,
)
from backend.store.alert_projection import ALERT_EVENTS, project_alerts
from backend.store.event_store import RecordedEvent, decode
from backend.store.tables import (
    AlertRow,
    CommandTransactionRow,
    CompartmentRow,
    LockerBankRow,
    StoredEvent,
)

TRACKER_COLUMNS = (
    "payload_hash",
    "first_seen_at",
    "last_seen_at",
    "duplicate_count",
    "attempts",
    "in_doubt",
)

Projector = Callable[[Session, RecordedEvent], None]
_PROJECTORS: dict[str, Projector] = {}
E = TypeVar("E", bound=DomainEvent)


def projector(
    event_type: type[E],
) -> Callable[[Callable[[Session, RecordedEvent, E], None]], Projector]:
    """Register `fn(session, recorded, event)` for `event_type`; it gets the event typed."""

    def register(fn: Callable[[Session, RecordedEvent, E], None]) -> Projector:
        def run(session: Session, recorded: RecordedEvent) -> None:
            event = recorded.event
            assert isinstance(event, event_type)
            fn(session, recorded, event)

        _PROJECTORS[event_type.event_type] = run
        return run

    return register


NOT_PROJECTED: Final = frozenset({"ProvisioningRejected", "QrScanned", "DeviceEventRecorded"})
"""Event types no read model follows: they are shown from the event log itself."""


def projected_event_types() -> frozenset[str]:
    """Every event type some projector (a read model's or the alerts') follows."""
    return frozenset(_PROJECTORS) | ALERT_EVENTS


def project(session: Session, recorded: RecordedEvent) -> None:
    """Apply one recorded event to the read models. An event type no projector follows and
    `NOT_PROJECTED` does not list is a programming error, said loudly."""
    event_type = recorded.event_type
    fn = _PROJECTORS.get(event_type)
    if fn is not None:
        fn(session, recorded)
    if event_type in ALERT_EVENTS:
        project_alerts(session, recorded)
    elif fn is None and event_type not in NOT_PROJECTED:
        raise TypeError(
            f"no projector for {event_type}: add one (@projector) or list it in NOT_PROJECTED"
        )
    bank = session.get(LockerBankRow, recorded.aggregate_uuid)
    if bank is not None:
        bank.version = recorded.aggregate_version
        bank.updated_at = recorded.event.occurred_at


def _bank(session: Session, r: RecordedEvent) -> LockerBankRow:
    row = session.get(LockerBankRow, r.aggregate_uuid)
    assert row is not None, f"event {r.event_type} for unknown bank {r.aggregate_uuid}"
    return row


def _txn(session: Session, r: RecordedEvent, transaction_id: str) -> CommandTransactionRow:
    row = session.get(CommandTransactionRow, (r.aggregate_uuid, transaction_id))
    assert row is not None, f"event {r.event_type} for unknown transaction {transaction_id}"
    return row


def _dialect_and_hash(
    row: LockerBankRow, specs: list[CompartmentSpec], setting: str, detected: str | None
) -> None:
    """The bank's effective dialect (`auto` until a registration decides) and the config
    hash its device reports in that dialect."""
    row.dialect_setting = setting
    row.detected_dialect = detected
    dialect = effective_dialect(setting, detected)
    row.dialect = dialect or "auto"
    row.desired_config_hash = desired_hash(specs, row.heartbeat_interval_seconds, dialect)


def _specs(session: Session, bank_uuid: str) -> list[CompartmentSpec]:
    rows = session.execute(
        select(CompartmentRow).where(col(CompartmentRow.bank_uuid) == bank_uuid)
    ).scalars()
    return sorted(
        (CompartmentSpec(number=c.number, slave_id=c.slave_id, address=c.address) for c in rows),
        key=lambda c: c.number,
    )


def _set_status(row: LockerBankRow, status: str, r: RecordedEvent) -> None:
    row.status = status
    row.status_changed_at = r.event.occurred_at


def _compartment_row(bank_uuid: str, spec: CompartmentSpec) -> CompartmentRow:
    return CompartmentRow(
        bank_uuid=bank_uuid, number=spec.number, slave_id=spec.slave_id, address=spec.address
    )


@projector(LockerBankCreated)
def _created(session: Session, r: RecordedEvent, e: LockerBankCreated) -> None:
    row = LockerBankRow(
        uuid=r.aggregate_uuid,
        name=e.name,
        location=e.location,
        status="unprovisioned",
        heartbeat_interval_seconds=e.heartbeat_interval_seconds,
        desired_config_hash="",
        config_state="unknown",
        status_changed_at=e.occurred_at,
        created_at=e.occurred_at,
        updated_at=e.occurred_at,
        version=r.aggregate_version,
    )
    _dialect_and_hash(row, e.compartments, e.dialect, None)
    session.add(row)
    for spec in e.compartments:
        session.add(_compartment_row(r.aggregate_uuid, spec))
    session.flush()


@projector(ProvisioningTokenIssued)
def _token(session: Session, r: RecordedEvent, e: ProvisioningTokenIssued) -> None:
    row = _bank(session, r)
    row.token_hmac = e.token_hmac
    row.token_expires_at = e.expires_at


@projector(LockerBankProvisioned)
def _provisioned(session: Session, r: RecordedEvent, e: LockerBankProvisioned) -> None:
    row = _bank(session, r)
    row.token_hmac = None
    row.token_expires_at = None
    row.password_sha256 = e.password_sha256
    row.client_id = e.client_id
    row.provisioned_at = e.occurred_at
    row.applied_config_hash = None
    row.config_state = "unknown"
    if e.dialect is not None:
        _dialect_and_hash(
            row, _specs(session, r.aggregate_uuid), row.dialect_setting or "seed", e.dialect
        )
    _set_status(row, "provisioned", r)


@projector(LockerBankUpdated)
def _updated(session: Session, r: RecordedEvent, e: LockerBankUpdated) -> None:
    row = _bank(session, r)
    old_hash, old_interval = row.desired_config_hash, row.heartbeat_interval_seconds
    row.name = e.name
    row.location = e.location
    row.heartbeat_interval_seconds = e.heartbeat_interval_seconds
    existing = {
        c.number: c
        for c in session.execute(
            select(CompartmentRow).where(col(CompartmentRow.bank_uuid) == r.aggregate_uuid)
        ).scalars()
    }
    wanted = {spec.number: spec for spec in e.compartments}
    for number, compartment in existing.items():
        if number not in wanted:
            session.delete(compartment)
    for number, spec in wanted.items():
        compartment = existing.get(number)
        if compartment is None:
            session.add(_compartment_row(r.aggregate_uuid, spec))
        else:
            compartment.slave_id = spec.slave_id
            compartment.address = spec.address
    _dialect_and_hash(row, e.compartments, e.dialect, row.detected_dialect)
    if row.desired_config_hash != old_hash or row.heartbeat_interval_seconds != old_interval:
        row.config_state = "unknown"  # the device has not got this mapping yet


@projector(CredentialsRevoked)
def _revoked(session: Session, r: RecordedEvent, _e: CredentialsRevoked) -> None:
    row = _bank(session, r)
    row.password_sha256 = None
    row.token_hmac = None  # revocation voids pending provisioning tokens
    row.token_expires_at = None
    _set_status(row, "revoked", r)


@projector(LockerBankCameOnline)
def _online(session: Session, r: RecordedEvent, _e: LockerBankCameOnline) -> None:
    _set_status(_bank(session, r), "online", r)


@projector(LockerBankWentOffline)
def _offline(session: Session, r: RecordedEvent, _e: LockerBankWentOffline) -> None:
    _set_status(_bank(session, r), "offline", r)


def _add_pending_txn(
    session: Session,
    r: RecordedEvent,
    e: CompartmentOpeningRequested | ConfigApplyRequested,
    *,
    action: str,
    **fields: Any,
) -> None:
    """A new pending command transaction row for a `*Requested` event."""
    keep_alive(
        session,
        CommandTransactionRow(
            locker_uuid=r.aggregate_uuid,
            transaction_id=e.transaction_id,
            action=action,
            status=CommandStatus.PENDING,
            requested_by=e.requested_by,
            requested_at=e.occurred_at,
            expires_at=e.expires_at,
            requested_from=r.metadata.origin[:200] if r.metadata.origin else None,
            **fields,
        ),
    )


def keep_alive(session: Session, row: SQLModel) -> None:
    """Add ``row`` and hold it for the rest of the session.

    The identity map holds unchanged rows weakly: once flushed, a new row nobody holds is
    gone from it, and the next `Session.get` of it in the same transaction (the view that
    `request_open` returns, `queries.written_transaction`) is a SELECT after an autoflush
    instead of a lookup in memory."""
    session.add(row)
    session.info.setdefault("kept_alive", []).append(row)


@projector(CompartmentOpeningRequested)
def _open_requested(session: Session, r: RecordedEvent, e: CompartmentOpeningRequested) -> None:
    _add_pending_txn(
        session, r, e, action="open_compartment", compartment_number=e.compartment_number
    )
    compartment = session.get(CompartmentRow, (r.aggregate_uuid, e.compartment_number))
    assert compartment is not None
    compartment.open_transaction_id = e.transaction_id
    compartment.last_transaction_id = e.transaction_id


@projector(ConfigApplyRequested)
def _config_requested(session: Session, r: RecordedEvent, e: ConfigApplyRequested) -> None:
    _add_pending_txn(session, r, e, action="apply_config", config_hash=e.config_hash)
    row = _bank(session, r)
    if row.config_state != "in_sync":
        row.config_state = "pending"


@projector(CommandSent)
def _sent(session: Session, r: RecordedEvent, e: CommandSent) -> None:
    row = _txn(session, r, e.transaction_id)
    row.sent_at = e.occurred_at
    if row.status == CommandStatus.PENDING:
        row.status = CommandStatus.SENT


def _finish_txn(
    session: Session,
    r: RecordedEvent,
    transaction_id: str,
    status: CommandStatus,
    late: bool = False,
) -> CommandTransactionRow:
    row = _txn(session, r, transaction_id)
    row.status = status
    row.completed_at = r.event.occurred_at
    row.late = late
    if row.compartment_number is not None:
        compartment = session.get(CompartmentRow, (r.aggregate_uuid, row.compartment_number))
        if compartment is not None and compartment.open_transaction_id == transaction_id:
            compartment.open_transaction_id = None
    return row


def _finish_answer(
    session: Session,
    r: RecordedEvent,
    e: CompartmentOpened | CommandFailed | ConfigApplied,
    status: CommandStatus,
) -> CommandTransactionRow:
    """Finish a transaction the bank answered: `status`, or LATE after its expiry; the
    answer's message is kept."""
    row = _finish_txn(
        session, r, e.transaction_id, CommandStatus.LATE if e.after_expiry else status, e.late
    )
    row.message = e.message
    return row


@projector(CompartmentOpened)
def _opened(session: Session, r: RecordedEvent, e: CompartmentOpened) -> None:
    _finish_answer(session, r, e, CommandStatus.SUCCESS)
    compartment = session.get(CompartmentRow, (r.aggregate_uuid, e.compartment_number))
    assert compartment is not None
    compartment.door_state = "open"
    compartment.last_opened_at = e.occurred_at


@projector(CommandFailed)
def _failed(session: Session, r: RecordedEvent, e: CommandFailed) -> None:
    row = _finish_answer(session, r, e, CommandStatus.ERROR)
    row.error_code = e.error_code
    _config_push_ended(session, r, e.action, "drifted")


def _config_push_ended(session: Session, r: RecordedEvent, action: str, state: str) -> None:
    """A config push that failed, timed out or expired leaves `pending`: the bank gets it
    again (as a new transaction) when it next comes online."""
    if action != "apply_config":
        return
    bank = _bank(session, r)
    if bank.config_state == "pending":
        bank.config_state = state


@projector(CommandTimedOut)
def _timed_out(session: Session, r: RecordedEvent, e: CommandTimedOut) -> None:
    _finish_txn(session, r, e.transaction_id, CommandStatus.TIMEOUT)
    _config_push_ended(session, r, e.action, "unknown")


@projector(CommandExpired)
def _expired(session: Session, r: RecordedEvent, e: CommandExpired) -> None:
    _finish_txn(
        session,
        r,
        e.transaction_id,
        CommandStatus.UNKNOWN if e.outcome_unknown else CommandStatus.EXPIRED,
    )
    _config_push_ended(session, r, e.action, "unknown")


@projector(ConfigApplied)
def _config_applied(session: Session, r: RecordedEvent, e: ConfigApplied) -> None:
    row = _finish_answer(session, r, e, CommandStatus.SUCCESS)
    row.applied_config_hash = e.applied_config_hash
    bank = _bank(session, r)
    bank.applied_config_hash = e.applied_config_hash
    bank.config_state = "in_sync" if e.in_sync else "drifted"


@projector(DoorStateChanged)
def _door(session: Session, r: RecordedEvent, e: DoorStateChanged) -> None:
    compartment = session.get(CompartmentRow, (r.aggregate_uuid, e.compartment_number))
    assert compartment is not None
    compartment.door_state = e.state


def rebuild(
    session: Session, batch: int = 2000, on_progress: Callable[[int, int], None] | None = None
) -> int:
    """Empty the read models and replay every event; tracker columns are kept. Returns count.
    `on_progress(done, total)` after each batch."""
    total = int(session.execute(select(func.count()).select_from(StoredEvent)).scalar() or 0)
    saved: dict[tuple[str, str], dict[str, Any]] = {
        (row.locker_uuid, row.transaction_id): {c: getattr(row, c) for c in TRACKER_COLUMNS}
        for row in session.execute(select(CommandTransactionRow)).scalars()
    }
    session.execute(delete(AlertRow))
    session.execute(delete(CommandTransactionRow))
    session.execute(delete(CompartmentRow))
    session.execute(delete(LockerBankRow))
    session.flush()
    session.expunge_all()
    count = 0
    position = 0
    while True:
        stmt = (
            select(StoredEvent)
            .where(col(StoredEvent.id) > position)
            .order_by(col(StoredEvent.id))
            .limit(batch)
        )
        rows = list(session.execute(stmt).scalars())
        if not rows:
            break
        for row in rows:
            project(session, decode(row))
            count += 1
        position = rows[-1].id or position
        session.flush()
        session.info.pop("kept_alive", None)  # one session for the whole log: not all of it
        if on_progress is not None:
            on_progress(count, max(total, count))
    for key, values in saved.items():
        txn = session.get(CommandTransactionRow, key)
        if txn is not None:
            for column, value in values.items():
                setattr(txn, column, value)
    session.flush()
    return count
