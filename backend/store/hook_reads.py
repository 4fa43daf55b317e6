"""The hook process's SQL, over plain DB-API drivers (`sqlite3`, psycopg).

`locker-console hook` reads three things: the provisioned banks at start, the credential
events after a position (change feed / tail), and one bank's newest credential event (a
directory miss). It does so without SQLAlchemy, the ORM tables or the event models: its
start time is what a hook restart costs the fleet (bench/hook_start.py), so this module
imports neither SQLAlchemy nor anything from `backend.http`. The SQL reads the same
tables the migrations create (`stored_events`, `locker_banks`); rows come back as the
driver's tuples and `backend.hook_store` turns them into credential changes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from backend.store.change_feed import libpq_url

__all__ = ["HookReads"]

CREDENTIAL_TYPES = ("LockerBankProvisioned", "CredentialsRevoked")
FOLLOWED_TYPES = (*CREDENTIAL_TYPES, "LockerBankCameOnline", "LockerBankWentOffline")
"""The credential events plus liveness (pinning)."""

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


class HookReads:
    """The hook's queries; every method may raise the driver's errors (callers retry)."""

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

    # ----- the queries ---------------------------------------------------------------------

    async def last_position(self) -> int:
        """The newest event's id (0 for none)."""
        return int((await self._query(_LAST, one=True))[0])

    async def provisioned(self) -> list[tuple[Any, ...]]:
        """Every provisioned, non-revoked bank: (uuid, password digest, client id, status)."""
        return list(await self._query(_LOAD))

    async def followed_between(self, after: int, up_to: int) -> list[tuple[Any, ...]]:
        """Credential and liveness events with ``after < id <= up_to``, in order:
        (id, aggregate uuid, event type, payload)."""
        return list(await self._query(_AFTER, (after, up_to, *FOLLOWED_TYPES)))

    async def latest_credential(self, bank_uuid: str) -> tuple[Any, ...] | None:
        """The bank's newest credential event as (id, aggregate uuid, event type, payload)."""
        row = await self._query(_LATEST, (bank_uuid, *CREDENTIAL_TYPES), one=True)
        return None if row is None else tuple(row)

    async def ping(self) -> bool:
        try:
            await self._query("SELECT 1", one=True)
        except Exception:
            return False
        return True
