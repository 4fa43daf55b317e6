"""Which banks exist: the device facade's reads of `locker_banks` (banks are never
deleted)."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from backend.store.tables import LockerBankRow


def exists(session: Session, bank_uuid: str) -> bool:
    """One indexed read: is there a bank with this uuid?"""
    query = select(col(LockerBankRow.uuid)).where(col(LockerBankRow.uuid) == bank_uuid)
    return session.execute(query).first() is not None


def all_uuids(session: Session) -> set[str]:
    """Every bank's uuid, one query."""
    return set(session.execute(select(col(LockerBankRow.uuid))).scalars())
