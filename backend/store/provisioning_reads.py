"""Registration's read: which bank a registration token (its HMAC digest) belongs to."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from backend.store.tables import LockerBankRow


def bank_for_token(session: Session, digest: str) -> str | None:
    """The uuid of the bank whose token has this digest, if any (one indexed read)."""
    row = session.execute(
        select(col(LockerBankRow.uuid)).where(col(LockerBankRow.token_hmac) == digest)
    ).first()
    return None if row is None else str(row[0])
