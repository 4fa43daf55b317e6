"""What the auth hook's directory reads from the store (`backend.http.credentials`): the
provisioned devices' credentials, and the credential events to follow after a position."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlmodel import Session, col

from backend.store.event_store import RecordedEvent, decode, last_position
from backend.store.tables import LockerBankRow, StoredEvent

__all__ = ["DeviceCredential", "device_credentials", "events_after", "latest_event_of"]

DeviceCredential = tuple[str, str, str | None, bool]
"""(bank uuid, password digest, pinned client id, online)."""


def device_credentials(session: Session) -> tuple[int, list[DeviceCredential]]:
    """The event position, then every unrevoked provisioned bank's credentials. The
    position is read first: rows read after it are at least as new, and replaying the
    events after it onto them is harmless (newest per bank wins)."""
    position = last_position(session)
    rows = session.execute(
        select(
            col(LockerBankRow.uuid),
            col(LockerBankRow.password_sha256),
            col(LockerBankRow.client_id),
            col(LockerBankRow.status),
        )
        .where(col(LockerBankRow.status) != "revoked")
        .where(col(LockerBankRow.password_sha256).is_not(None))
    ).all()
    return position, [(str(u), str(h), c, s == "online") for u, h, c, s in rows]


def events_after(
    session: Session, position: int, event_types: Collection[str]
) -> tuple[list[RecordedEvent], int]:
    """The events of `event_types` after `position` and the position read up to.

    The high-water mark is read first: every such event at or below it is then in the
    result (appends are serialized, so nothing commits below the mark later)."""
    mark = last_position(session)
    if mark <= position:
        return [], position
    rows = session.execute(
        select(StoredEvent)
        .where(col(StoredEvent.id) > position)
        .where(col(StoredEvent.id) <= mark)
        .where(col(StoredEvent.event_type).in_(event_types))
        .order_by(col(StoredEvent.id))
    ).scalars()
    return [decode(row) for row in rows], mark


def latest_event_of(
    session: Session, uuid: str, event_types: Collection[str]
) -> RecordedEvent | None:
    """The newest event of `event_types` of one bank, or None."""
    row = session.execute(
        select(StoredEvent)
        .where(col(StoredEvent.aggregate_uuid) == uuid)
        .where(col(StoredEvent.event_type).in_(event_types))
        .order_by(col(StoredEvent.id).desc())
        .limit(1)
    ).scalar_one_or_none()
    return decode(row) if row is not None else None
