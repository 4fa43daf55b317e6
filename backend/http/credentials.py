"""Keeping the auth hook's ``UserDirectory`` in step with the store.

The hook decides from memory (DESIGN section 5); these functions fill that
memory and keep it current:

* ``load_directory(service, settings)``: the directory at start, with the
  backend and provisioning users from the settings and every provisioned,
  non-revoked bank from ``locker_banks``. It remembers the event position it
  was loaded at.
* ``credential_listener(directory)``: pass to ``LockerService.subscribe``; it
  applies ``LockerBankProvisioned`` / ``CredentialsRevoked`` the moment this
  process records them (a revocation from the TUI or the API takes effect at
  the broker's very next check).
* ``follow_credentials(service, directory, interval=1.0)``: a task that tails
  the event store and applies credential changes recorded by *other*
  processes, e.g. ``locker-console bank revoke`` run from a shell next to a
  headless backend, or a second backend instance. On PostgreSQL it wakes on
  the store's change feed (``LISTEN locker_credentials``, milliseconds after
  the commit) and reads at least every ``interval`` seconds; on SQLite it
  tails the log every ``SQLITE_TAIL_INTERVAL`` (0.25 s). Run it for as long
  as the hook serves (``build_app`` and the hook process do).
* ``StoreLookup(db, directory)``: answers a miss of the directory from the
  store (the bank's newest credential event), so a device provisioned by any
  instance is known at its first CONNECT, whatever hook it reaches.

Both paths go through one ``CredentialSync`` per directory, which applies a
bank's change only if it is newer (by event position) than the last one it
applied, so the poller replaying an old provisioning can never undo a
revocation the listener already applied. The raw events are read with
``backend.store.event_store.read_after``: the public event views leave the
password hashes out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from backend.config import Settings
from backend.event_wait import wait_event
from backend.http.credential_sync import (
    CREDENTIAL_EVENT_TYPES,
    FOLLOWED_EVENT_TYPES,
    CredentialSync,
)
from backend.http.users import UserDirectory
from backend.store.change_feed import SQLITE_TAIL_INTERVAL, listen_for_changes
from backend.store.credential_reads import (
    DeviceCredential,
    device_credentials,
    events_after,
    latest_event_of,
)
from backend.store.database import Database
from backend.store.event_store import RecordedEvent, last_position


class _HasDb(Protocol):
    """Anything with the store (a ``LockerService``, or the hook process's own)."""

    @property
    def db(self) -> Database: ...


__all__ = [
    "CredentialSync",
    "StoreLookup",
    "credential_listener",
    "follow_credentials",
    "load_directory",
]

log = logging.getLogger(__name__)


def credential_listener(directory: UserDirectory) -> Callable[[list[RecordedEvent]], None]:
    """The listener to pass to ``service.subscribe(...)`` for ``directory``."""
    return CredentialSync.of(directory).listener


async def load_directory(service: _HasDb, settings: Settings) -> UserDirectory:
    """The hook's directory: service users from ``settings``, devices from the store.

    Raises ``SettingsError`` naming the variable when a password is missing.
    """
    directory = UserDirectory.of(settings)

    def work() -> tuple[int, list[DeviceCredential]]:
        with service.db.read_session() as session:
            return device_credentials(session)

    position, devices = await service.db.read(work)
    loaded = 0
    for uuid, digest, client_id, online in devices:
        try:
            directory.device_provisioned(uuid, digest, client_id)
            directory.bank_online(uuid, online)
            loaded += 1
        except ValueError as exc:
            log.error("bank %s not loaded into the auth directory: %s", uuid, exc)
    CredentialSync.of(directory).position = position
    log.info("auth directory: %d device(s) loaded at event position %d", loaded, position)
    return directory


STOP_WAIT_S = 5.0
"""How long stopping the follower waits for its change-feed listener to end."""


async def follow_credentials(
    service: _HasDb,
    directory: UserDirectory,
    interval: float = 1.0,
    *,
    after: int | None = None,
) -> None:
    """Tail the store and apply credential changes (from any process) until cancelled.

    Starts after ``after``, else where ``load_directory`` left the directory,
    else at the current end of the log. On PostgreSQL a change-feed notification
    wakes it at once (``interval`` is then only the fallback); on SQLite it reads
    every ``min(interval, SQLITE_TAIL_INTERVAL)``. A failing store is logged once
    and retried.
    """
    db = service.db
    sync = CredentialSync.of(directory)
    if after is not None:
        sync.position = after
    position: int = sync.position if sync.position is not None else await db.read(_last, db)
    sync.position = position
    wake = asyncio.Event()
    listener: asyncio.Task[None] | None = None
    if db.is_postgres:
        listener = asyncio.create_task(
            listen_for_changes(db.url, wake.set), name="credential-change-feed"
        )
    else:
        interval = min(interval, SQLITE_TAIL_INTERVAL)

    failing = False
    try:
        while True:
            wake.clear()
            try:
                changes, cursor = await db.read(_credential_changes_after, db, position)
                sync.apply(changes)
                position = sync.position = cursor
                if failing:
                    log.info("credential follower: store reachable again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("credential follower: reading events failed: %s", exc)
                failing = True
            await wait_event(wake, interval)
    finally:
        if listener is not None:
            listener.cancel()
            # bounded: stopping must not wait for ever on a change feed (the 120 s CI
            # teardown hangs were this loop losing its cancel, see backend.event_wait)
            _, pending = await asyncio.wait({listener}, timeout=STOP_WAIT_S)
            if pending:
                log.warning("credential follower: the change feed did not stop in time")


def _last(db: Database) -> int:
    with db.read_session() as session:
        return last_position(session)


def _credential_changes_after(db: Database, position: int) -> tuple[list[RecordedEvent], int]:
    """The credential events after ``position`` and the position read up to.

    The high-water mark is read first: every credential event at or below it is then in
    the result (appends are serialized, so nothing commits below the mark later)."""
    with db.read_session() as session:
        return events_after(session, position, FOLLOWED_EVENT_TYPES)


class StoreLookup:
    """Answers the hook's directory misses from the store (DESIGN 5.1: "a device
    provisioned by one instance is known to every hook at once").

    ``await lookup(username)`` reads the bank's newest credential event and applies it
    through the directory's ``CredentialSync`` (newest per bank wins, so it can never undo
    a newer change). At most ``concurrency`` look-ups run at once: a flood of unknown
    names waits for them instead of exhausting the store's connections."""

    def __init__(self, db: Database, directory: UserDirectory, concurrency: int = 4) -> None:
        self._db = db
        self._sync = CredentialSync.of(directory)
        self._gate = asyncio.Semaphore(concurrency)
        self.lookups = 0
        self.found = 0

    async def __call__(self, username: str) -> None:
        async with self._gate:
            self.lookups += 1
            latest = await self._db.read(_latest_credential_event, self._db, username)
            if latest is not None and self._sync.apply([latest]):
                self.found += 1


def _latest_credential_event(db: Database, uuid: str) -> RecordedEvent | None:
    with db.read_session() as session:
        return latest_event_of(session, uuid, CREDENTIAL_EVENT_TYPES)
