"""The hook process's read-only view of the store, over plain DB-API drivers.

`locker-console hook` reads three things: the provisioned banks at start, the credential
events after a position (change feed / tail), and one bank's newest credential event (a
directory miss). It does so with `sqlite3` or psycopg directly, without SQLAlchemy, the
ORM tables or the event models: its start time is what a hook restart costs the fleet
(bench/hook_start.py). The SQL reads the same tables the migrations create
(`stored_events`, `locker_banks`); tests/integration/test_hook_process.py runs it on both
databases.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from backend.http.credential_sync import (
    CAME_ONLINE,
    LIVENESS_EVENT_TYPES,
    PROVISIONED,
    CredentialChange,
)
from backend.store.change_feed import libpq_url

__all__ = ["HookStore"]

_TYPES = ("LockerBankProvisioned", "CredentialsRevoked")
_FOLLOWED = (*_TYPES, "LockerBankCameOnline", "LockerBankWentOffline")  # + liveness (pinning)
_LOAD = (
    "SELECT uuid, password_sha256, client_id, status FROM locker_banks "
    "WHERE status <> 'revoked' AND password_sha256 IS NOT NULL"
)
_LAST = "SELECT coalesce(max(id), 0) FROM stored_events"
_AFTER = (
    "SELECT id, aggregate_uuid, event_type, payload FROM stored_events "
    "WHERE id > {p} AND id <= {p} AND event_type IN ({p}, {p}, {p}, {p}) ORDER BY id"
)
_LATEST = (
    "SELECT id, aggregate_uuid, event_type, payload FROM stored_events "
    "WHERE aggregate_uuid = {p} AND event_type IN ({p}, {p}) ORDER BY id DESC LIMIT 1"
)


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
        self.url = url
        self.is_postgres = not url.startswith("sqlite")
        if self.is_postgres:
            self._dsn = libpq_url(url)
            self._conn: Any = None
            self._lock = asyncio.Lock()
        else:
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if not path or path.startswith(":memory:"):
                raise ValueError("the hook needs a database file or PostgreSQL (DATABASE_URL)")
            self._path = path

    # ----- the driver ----------------------------------------------------------------------

    def _sqlite(self, sql: str, args: Sequence[Any], one: bool) -> Any:
        conn = sqlite3.connect(self._path, timeout=15)
        try:
            cursor = conn.execute(sql.replace("{p}", "?"), tuple(args))
            return cursor.fetchone() if one else cursor.fetchall()
        finally:
            conn.close()

    async def _query(self, sql: str, args: Sequence[Any] = (), *, one: bool = False) -> Any:
        if not self.is_postgres:
            return await asyncio.to_thread(self._sqlite, sql, args, one)
        import psycopg

        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            try:
                cursor = await self._conn.execute(sql.replace("{p}", "%s"), tuple(args))
                return await (cursor.fetchone() if one else cursor.fetchall())
            except (psycopg.OperationalError, psycopg.InterfaceError):
                await self._conn.close()
                self._conn = None
                raise

    async def close(self) -> None:
        if self.is_postgres and self._conn is not None:
            await self._conn.close()
            self._conn = None

    # ----- what the hook reads -------------------------------------------------------------

    async def load(self) -> tuple[int, list[tuple[str, str, str | None, bool]]]:
        """The newest event position, then every provisioned, non-revoked bank's password
        digest (rows read after the position are at least as new; replaying the events
        after it onto them is harmless: newest per bank wins)."""
        position = int((await self._query(_LAST, one=True))[0])
        rows = await self._query(_LOAD)
        return position, [(str(u), str(d), c, s == "online") for u, d, c, s in rows]

    async def changes_after(self, position: int) -> tuple[list[CredentialChange], int]:
        """The credential events after ``position`` and the position read up to (the
        high-water mark first: appends are serialized, nothing commits below it later)."""
        mark = int((await self._query(_LAST, one=True))[0])
        if mark <= position:
            return [], position
        rows = await self._query(_AFTER, (position, mark, *_FOLLOWED))
        return [_change(row) for row in rows], mark

    async def latest(self, bank_uuid: str) -> CredentialChange | None:
        """The bank's newest credential event, if any."""
        row = await self._query(_LATEST, (bank_uuid, *_TYPES), one=True)
        return _change(row) if row is not None else None

    async def ping(self) -> bool:
        try:
            await self._query("SELECT 1", one=True)
        except Exception:
            return False
        return True
