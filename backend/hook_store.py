"""The hook process's read-only view of the store, as credential changes.

`locker-console hook` reads three things: the provisioned banks at start, the credential
events after a position (change feed / tail), and one bank's newest credential event (a
directory miss). The SQL and the plain DB-API driver live in `backend.store.hook_reads`
(no SQLAlchemy: the hook's start time is what a restart costs the fleet,
bench/hook_start.py); this module turns its rows into `CredentialChange`s.
tests/integration/test_hook_process.py runs it on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from backend.http.credential_sync import (
    CAME_ONLINE,
    LIVENESS_EVENT_TYPES,
    PROVISIONED,
    CredentialChange,
)
from backend.store.hook_reads import HookReads

__all__ = ["HookStore"]


def _change(row: Sequence[Any]) -> CredentialChange:
    position, uuid, event_type, payload = row
    if event_type in LIVENESS_EVENT_TYPES:
        return CredentialChange(int(position), str(uuid), None, online=event_type == CAME_ONLINE)
    digest = client_id = None
    if event_type == PROVISIONED:
        data = json.loads(payload)
        digest = str(data["password_sha256"])
        client_id = data.get("client_id")
    return CredentialChange(int(position), str(uuid), digest, client_id=client_id)


class HookStore:
    """Reads for the hook; every method may raise the driver's errors (callers retry)."""

    def __init__(self, url: str) -> None:
        self.reads = HookReads(url)
        self.url = url
        self.is_postgres = self.reads.is_postgres

    async def close(self) -> None:
        await self.reads.close()

    async def load(self) -> tuple[int, list[tuple[str, str, str | None, bool]]]:
        """The newest event position, then every provisioned, non-revoked bank's password
        digest (rows read after the position are at least as new; replaying the events
        after it onto them is harmless: newest per bank wins)."""
        position = await self.reads.last_position()
        rows = await self.reads.provisioned()
        return position, [(str(u), str(d), c, s == "online") for u, d, c, s in rows]

    async def changes_after(self, position: int) -> tuple[list[CredentialChange], int]:
        """The credential events after ``position`` and the position read up to (the
        high-water mark first: appends are serialized, nothing commits below it later)."""
        mark = await self.reads.last_position()
        if mark <= position:
            return [], position
        rows = await self.reads.followed_between(position, mark)
        return [_change(row) for row in rows], mark

    async def latest(self, bank_uuid: str) -> CredentialChange | None:
        """The bank's newest credential event, if any."""
        row = await self.reads.latest_credential(bank_uuid)
        return _change(row) if row is not None else None

    async def ping(self) -> bool:
        return await self.reads.ping()
