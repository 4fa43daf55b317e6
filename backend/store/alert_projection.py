"""The alerts read model (DESIGN section 7), kept in step with the events.

Called by `projections.project` after the other read models, in the same transaction, so
a rebuild replays it like the rest. Everything comes from the event and its position (the
alert's id is the position of the event that opened it); whether a bank-offline alert is
resolved also depends on the time of asking (`resolves_at`), see `AlertRow`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlmodel import Session, col

from backend.domain.alerts import (
    OFFLINE_RESOLVES_AFTER,
    TRANSACTION_KINDS,
    describe_action,
)
from backend.domain.events import (
    AlertAcknowledged,
    CommandExpired,
    CommandFailed,
    CompartmentOpened,
    ConfigApplied,
    CredentialsRevoked,
    LockerBankCameOnline,
    LockerBankWentOffline,
)
from backend.store.batch_reads import chunks
from backend.store.event_store import RecordedEvent
from backend.store.tables import AlertRow, CommandTransactionRow

ALERT_EVENTS = frozenset(
    {
        "LockerBankWentOffline",
        "LockerBankCameOnline",
        "CredentialsRevoked",
        "CompartmentOpened",
        "CommandFailed",
        "ConfigApplied",
        "CommandExpired",
        "AlertAcknowledged",
    }
)


def project_alerts(session: Session, r: RecordedEvent) -> AlertRow | None:
    """Apply one event to the alerts; returns the alert it opened, changed or None."""
    if r.event_type not in ALERT_EVENTS:
        return None
    e = r.event
    if isinstance(e, LockerBankWentOffline):
        return _went_offline(session, r, e)
    if isinstance(e, LockerBankCameOnline):
        alert = _current_offline(session, r.aggregate_uuid)
        if alert is not None and alert.resolves_at is None:
            alert.resolves_at = e.occurred_at + OFFLINE_RESOLVES_AFTER
        return alert
    if isinstance(e, CredentialsRevoked):
        alert = _current_offline(session, r.aggregate_uuid)
        if alert is not None:
            alert.resolved_at = e.occurred_at  # nothing more to expect of this bank
        return alert
    if isinstance(e, CompartmentOpened | ConfigApplied | CommandFailed):
        if e.after_expiry:
            _settle(session, r, e.transaction_id)
            what = "opened the door" if isinstance(e, CompartmentOpened) else "answered"
            if isinstance(e, CommandFailed):
                what = f"answered {e.error_code or 'an error'}"
            return _transaction_alert(
                session, r, "late_execution", e.transaction_id, f"device {what} after expiry"
            )
        if isinstance(e, CommandFailed):
            code = e.error_code or "error"
            detail = f"{code}: {e.message}" if e.message else code
            return _transaction_alert(session, r, "command_failed", e.transaction_id, detail)
        return None
    if isinstance(e, CommandExpired):
        if e.outcome_unknown:
            return _transaction_alert(
                session,
                r,
                "outcome_unknown",
                e.transaction_id,
                "outcome unknown - check the door (the device cannot repeat a lost answer)",
            )
        return _transaction_alert(
            session, r, "command_expired", e.transaction_id, "expired unanswered; never executes"
        )
    if isinstance(e, AlertAcknowledged):
        alert = session.get(AlertRow, e.alert_id)
        if alert is None or alert.bank_uuid != r.aggregate_uuid:
            return None
        alert.acknowledged_at = e.occurred_at
        alert.acknowledged_by = r.metadata.actor[:128]
        alert.ack_note = e.note[:500] or None
        if alert.kind in TRANSACTION_KINDS and alert.resolved_at is None:
            alert.resolved_at = e.occurred_at
        return alert
    return None


_NEWEST_OFFLINE = "alert_projection.newest_offline"
"""`Session.info` key: bank uuid -> its newest bank-offline alert (or None), for a batch."""


@contextmanager
def newest_offline_alerts(session: Session, banks: Collection[str]) -> Iterator[None]:
    """For a batch of banks coming online (or going offline) together: their newest
    bank-offline alerts read in one query per chunk and kept for the block, instead of
    one query (and a flush) per bank in the projection."""
    known: dict[str, AlertRow | None] = dict.fromkeys(banks)
    for chunk in chunks(list(banks)):
        newest = (
            select(func.max(col(AlertRow.id)))
            .where(col(AlertRow.bank_uuid).in_(chunk))
            .where(col(AlertRow.kind) == "bank_offline")
            .group_by(col(AlertRow.bank_uuid))
        )
        for alert in session.execute(
            select(AlertRow).where(col(AlertRow.id).in_(newest))
        ).scalars():
            known[alert.bank_uuid] = alert
    session.info[_NEWEST_OFFLINE] = known
    try:
        yield
    finally:
        session.info.pop(_NEWEST_OFFLINE, None)


def _newest_offline(session: Session, bank_uuid: str) -> AlertRow | None:
    known: dict[str, AlertRow | None] | None = session.info.get(_NEWEST_OFFLINE)
    if known is not None and bank_uuid in known:
        return known[bank_uuid]
    alert: AlertRow | None = session.execute(
        select(AlertRow)
        .where(col(AlertRow.bank_uuid) == bank_uuid)
        .where(col(AlertRow.kind) == "bank_offline")
        .order_by(col(AlertRow.id).desc())
        .limit(1)
    ).scalar_one_or_none()
    return alert


def _current_offline(session: Session, bank_uuid: str) -> AlertRow | None:
    """The bank's newest bank-offline alert if it is not resolved for good."""
    alert = _newest_offline(session, bank_uuid)
    if alert is None or alert.resolved_at is not None:
        return None
    return alert


def _went_offline(session: Session, r: RecordedEvent, e: LockerBankWentOffline) -> AlertRow:
    alert = _current_offline(session, r.aggregate_uuid)
    if alert is not None and (alert.resolves_at is None or e.occurred_at < alert.resolves_at):
        alert.count += 1  # a flap: back offline within a minute of coming online
        alert.last_at = e.occurred_at
        alert.resolves_at = None
        alert.detail = f"offline ({e.reason.replace('_', ' ')}), {alert.count} times"
        return alert
    if alert is not None:
        alert.resolved_at = alert.resolves_at  # it had resolved; a new episode starts
    alert = AlertRow(
        id=r.position,
        kind="bank_offline",
        bank_uuid=r.aggregate_uuid,
        detail=f"offline ({e.reason.replace('_', ' ')})",
        count=1,
        opened_at=e.occurred_at,
        last_at=e.occurred_at,
    )
    session.add(alert)
    known: dict[str, AlertRow | None] | None = session.info.get(_NEWEST_OFFLINE)
    if known is not None and r.aggregate_uuid in known:
        known[r.aggregate_uuid] = alert  # the newest now
    return alert


def _transaction_alert(
    session: Session, r: RecordedEvent, kind: str, transaction_id: str, detail: str
) -> AlertRow:
    txn = session.get(CommandTransactionRow, (r.aggregate_uuid, transaction_id))
    what = describe_action(txn.action, txn.compartment_number) if txn is not None else "command"
    alert = AlertRow(
        id=r.position,
        kind=kind,
        bank_uuid=r.aggregate_uuid,
        transaction_id=transaction_id,
        detail=f"{what}: {detail}"[:512],
        count=1,
        opened_at=r.event.occurred_at,
        last_at=r.event.occurred_at,
    )
    session.add(alert)
    return alert


def _settle(session: Session, r: RecordedEvent, transaction_id: str) -> None:
    """An answer after expiry replaces the transaction's expired/unknown alert."""
    for alert in session.execute(
        select(AlertRow)
        .where(col(AlertRow.bank_uuid) == r.aggregate_uuid)
        .where(col(AlertRow.transaction_id) == transaction_id)
        .where(col(AlertRow.resolved_at).is_(None))
    ).scalars():
        alert.resolved_at = r.event.occurred_at
