"""Who may drain the outbox (the relay, `backend.mqtt.relay`): one instance at a time.

On PostgreSQL the draining instance holds a session-level advisory lock
(`pg_try_advisory_lock`) on a dedicated connection; the others retry and take over when
it dies (its connection closes, and the lock with it). On SQLite a single backend
instance is assumed (it is a single-host database) and no lock is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from sqlalchemy import Connection, Engine, text

from backend.store.database import Database

__all__ = ["DrainLock", "PostgresAdvisoryLock", "SingleInstanceLock", "drain_lock_for"]

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x6C6F636B72656C61  # "lockrela": one advisory lock per database
LOCK_CHECK_INTERVAL = 5.0


class DrainLock(Protocol):
    """Who may drain the outbox."""

    async def acquire(self) -> bool: ...

    async def release(self) -> None: ...


class SingleInstanceLock:
    """SQLite: one backend instance per database is assumed, so the lock is always ours."""

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class PostgresAdvisoryLock:
    """A session-level advisory lock held on its own connection while this relay drains."""

    def __init__(self, engine: Engine, key: int = RELAY_LOCK_KEY) -> None:
        self._engine = engine
        self._key = key
        self._conn: Connection | None = None
        self._checked = 0.0

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> bool:
        if self._conn is not None and time.monotonic() - self._checked < LOCK_CHECK_INTERVAL:
            return True
        return await asyncio.to_thread(self._acquire_sync)

    def _acquire_sync(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._checked = time.monotonic()
                return True
            except Exception:
                log.warning("lost the relay lock connection; trying to take the lock again")
                self._close_sync()
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            )
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        log.info("this instance now drains the outbox (advisory lock taken)")
        self._conn = conn
        self._checked = time.monotonic()
        return True

    async def release(self) -> None:
        if self._conn is not None:
            await asyncio.to_thread(self._release_sync)

    def _release_sync(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(Exception):
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
        self._close_sync()

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def drain_lock_for(db: Database) -> DrainLock:
    """The lock for this store: an advisory lock on PostgreSQL, none needed on SQLite."""
    if db.is_postgres:
        return PostgresAdvisoryLock(db.write_engine)
    return SingleInstanceLock()
