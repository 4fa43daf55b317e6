"""The REST API's bearer tokens (`api_tokens`): stored as the SHA-256 of the token only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from backend.store.tables import ApiTokenRow

__all__ = ["add_token", "token_name_taken", "token_owner"]


def token_name_taken(session: Session, name: str) -> bool:
    return (
        session.execute(select(ApiTokenRow).where(col(ApiTokenRow.name) == name)).first()
        is not None
    )


def add_token(session: Session, name: str, role: str, digest: str, now: datetime) -> None:
    session.add(ApiTokenRow(name=name, role=role, token_sha256=digest, created_at=now))


def token_owner(session: Session, digest: str) -> tuple[str, str] | None:
    """(name, role) of the unrevoked token with this digest, or None."""
    row = session.execute(
        select(ApiTokenRow).where(col(ApiTokenRow.token_sha256) == digest)
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row.name, row.role
