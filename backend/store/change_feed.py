"""The store's change feed: who must look again, and when.

PostgreSQL: every transaction that appends a credential event (a bank provisioned or
revoked) sends ``NOTIFY locker_credentials`` (delivered at commit, to every listening
process: each hook, each backend instance). ``listen_for_changes`` keeps one LISTEN
connection open, reconnecting with backoff, and calls ``on_change`` for every notification
and after every (re)connect (something may have been missed meanwhile).

SQLite has no notifications: readers tail the event log instead (``SQLITE_TAIL_INTERVAL``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

__all__ = [
    "CHANNEL",
    "CREDENTIAL_EVENT_TYPES",
    "SQLITE_TAIL_INTERVAL",
    "first_line",
    "libpq_url",
    "listen_for_changes",
]

log = logging.getLogger(__name__)

CHANNEL: Final = "locker_credentials"
CREDENTIAL_EVENT_TYPES: Final = frozenset({"LockerBankProvisioned", "CredentialsRevoked"})
"""The same as ``backend.http.credential_sync.CREDENTIAL_EVENT_TYPES`` (this module is
imported by the event store, which must not depend on the HTTP layer)."""
SQLITE_TAIL_INTERVAL: Final = 0.25
_BACKOFF: Final = (0.1, 0.25, 0.5, 1.0, 2.0)


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (any driver) as a plain libpq URL for psycopg (no
    SQLAlchemy import: the hook process starts without it)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not (scheme == "postgres" or scheme.split("+")[0] == "postgresql"):
        raise ValueError("not a PostgreSQL URL")
    return "postgresql://" + rest


def first_line(exc: BaseException) -> str:
    """An error for a log line: its kind and the first line of its text."""
    lines = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {lines[0][:200]}" if lines else exc.__class__.__name__


async def listen_for_changes(url: str, on_change: Callable[[], None]) -> None:
    """LISTEN on ``CHANNEL`` until cancelled; ``on_change()`` per notification and after
    each (re)connect. Failures are logged once per outage, never raised."""
    import psycopg

    failures = 0
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                if failures:
                    log.info("change feed: listening again")
                failures = 0
                on_change()  # catch up on whatever happened while not listening
                async for _ in conn.notifies():
                    on_change()
            finally:
                await conn.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if failures == 0:
                log.warning("change feed: LISTEN failed, retrying: %s", first_line(exc))
            delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
            failures += 1
            await asyncio.sleep(delay)
