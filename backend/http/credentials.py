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
  headless backend, or a second backend instance. Such a change reaches the
  hook within ``interval`` seconds. Run it for as long as the hook serves
  (``build_app`` does both for you unless told not to).

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
import weakref
from collections.abc import Callable, Iterable
from typing import Final

from sqlalchemy import select
from sqlmodel import col

from backend.config import Settings
from backend.domain.events import (
    CredentialsRevoked,
    LockerBankCameOnline,
    LockerBankProvisioned,
    LockerBankWentOffline,
)
from backend.http.users import UserDirectory
from backend.service import LockerService
from backend.store.event_store import RecordedEvent, last_position, read_after
from backend.store.tables import LockerBankRow

__all__ = [
    "CredentialSync",
    "credential_listener",
    "follow_credentials",
    "load_directory",
]

log = logging.getLogger(__name__)
READ_BATCH: Final = 1000
_CREDENTIAL_EVENTS: Final = (LockerBankProvisioned, CredentialsRevoked)
_LIVENESS_EVENTS: Final = (LockerBankCameOnline, LockerBankWentOffline)
_FOLLOWED_EVENTS: Final = (*_CREDENTIAL_EVENTS, *_LIVENESS_EVENTS)

_SYNCS: weakref.WeakKeyDictionary[UserDirectory, CredentialSync] = weakref.WeakKeyDictionary()


class CredentialSync:
    """Applies credential events to one directory, newest per bank wins."""

    def __init__(self, directory: UserDirectory) -> None:
        self.directory = directory
        self.position: int | None = None
        """The store position the directory reflects (set by ``load_directory``/the follower)."""
        self._applied: dict[str, int] = {}
        self._liveness: dict[str, int] = {}

    @classmethod
    def of(cls, directory: UserDirectory) -> CredentialSync:
        """The one sync of ``directory`` (shared by the listener and the follower)."""
        sync = _SYNCS.get(directory)
        if sync is None:
            sync = _SYNCS[directory] = cls(directory)
        return sync

    def apply(self, recorded: Iterable[RecordedEvent]) -> int:
        """Apply the credential events among ``recorded``; returns how many changed it.

        Only the newest credential event of each bank counts, and only if it
        is newer than what was applied for that bank before.
        """
        latest: dict[str, RecordedEvent] = {}
        recorded = list(recorded)
        self._apply_liveness(recorded)
        for item in recorded:
            if isinstance(item.event, _CREDENTIAL_EVENTS):
                seen = latest.get(item.aggregate_uuid)
                if seen is None or item.position > seen.position:
                    latest[item.aggregate_uuid] = item
        changed = 0
        for uuid, item in latest.items():
            if item.position <= self._applied.get(uuid, 0):
                continue
            try:
                if isinstance(item.event, LockerBankProvisioned):
                    self.directory.device_provisioned(
                        uuid, item.event.password_sha256, item.event.client_id
                    )
                else:
                    self.directory.device_revoked(uuid)
            except ValueError as exc:
                log.error("credentials of bank %s not applied: %s", uuid, exc)
                continue
            self._applied[uuid] = item.position
            changed += 1
        return changed

    def _apply_liveness(self, recorded: list[RecordedEvent]) -> None:
        """Online/offline changes (the provisioning rule of the pinned identities)."""
        for item in recorded:
            event = item.event
            if not isinstance(event, _LIVENESS_EVENTS):
                continue
            if item.position <= self._liveness.get(item.aggregate_uuid, 0):
                continue
            self._liveness[item.aggregate_uuid] = item.position
            self.directory.bank_online(item.aggregate_uuid, isinstance(event, LockerBankCameOnline))

    def listener(self, recorded: list[RecordedEvent]) -> None:
        """For ``LockerService.subscribe``: events this process just recorded."""
        self.apply(recorded)


def credential_listener(directory: UserDirectory) -> Callable[[list[RecordedEvent]], None]:
    """The listener to pass to ``service.subscribe(...)`` for ``directory``."""
    return CredentialSync.of(directory).listener


async def load_directory(service: LockerService, settings: Settings) -> UserDirectory:
    """The hook's directory: service users from ``settings``, devices from the store.

    Raises ``SettingsError`` naming the variable when a password is missing.
    """
    directory = UserDirectory(
        settings.mqtt_user,
        settings.secret("mqtt_password"),
        settings.mqtt_provisioning_user,
        settings.secret("mqtt_provisioning_password"),
        settings.superusers,
        backend_client_id=settings.mqtt_client_id,
    )

    def work() -> tuple[int, list[tuple[str, str, str | None, bool]]]:
        with service.db.read_session() as session:
            # The position first: rows read after it are at least as new, and replaying
            # the events after it onto them is harmless (newest per bank wins).
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


async def follow_credentials(
    service: LockerService,
    directory: UserDirectory,
    interval: float = 1.0,
    *,
    after: int | None = None,
) -> None:
    """Tail the store and apply credential changes (from any process) until cancelled.

    Starts after ``after``, else where ``load_directory`` left the directory,
    else at the current end of the log. A failing store is logged once and
    retried every ``interval``.
    """
    sync = CredentialSync.of(directory)
    if after is not None:
        sync.position = after
    position: int = (
        sync.position
        if sync.position is not None
        else await service.db.read(_last_position, service)
    )
    sync.position = position

    def read(position: int) -> list[RecordedEvent]:
        with service.db.read_session() as session:
            return read_after(session, position, READ_BATCH)

    failing = False
    while True:
        try:
            # Read up to the end first and apply once: a bank's older change never shows
            # between two reads while a newer one waits in the next batch.
            changes: list[RecordedEvent] = []
            cursor = position
            while True:
                batch = await service.db.read(read, cursor)
                changes.extend(e for e in batch if isinstance(e.event, _FOLLOWED_EVENTS))
                if batch:
                    cursor = batch[-1].position
                if len(batch) < READ_BATCH:
                    break
            sync.apply(changes)
            position = sync.position = cursor
            if failing:
                log.info("credential follower: store reachable again")
            failing = False
        except Exception as exc:
            if not failing:
                log.warning("credential follower: reading events failed: %s", exc)
            failing = True
        await asyncio.sleep(interval)


def _last_position(service: LockerService) -> int:
    with service.db.read_session() as session:
        return last_position(session)
