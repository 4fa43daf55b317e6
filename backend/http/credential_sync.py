"""Applying credential changes to the hook's in-memory directory, newest per bank wins.

Light on purpose (no ORM, no event models): `locker-console hook` imports it at start, and
its start time is what a hook restart costs the fleet. The backend's follower
(`backend.http.credentials`) and the hook process's store (`backend.hook_store`) both turn
what they read into `CredentialChange`s and hand them to the directory's one
`CredentialSync`, so a late read of an old provisioning can never undo a newer revocation.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from backend.http.users import UserDirectory

__all__ = [
    "CREDENTIAL_EVENT_TYPES",
    "FOLLOWED_EVENT_TYPES",
    "LIVENESS_EVENT_TYPES",
    "CredentialChange",
    "CredentialSync",
]

log = logging.getLogger(__name__)

PROVISIONED: Final = "LockerBankProvisioned"
REVOKED: Final = "CredentialsRevoked"
CREDENTIAL_EVENT_TYPES: Final = frozenset({PROVISIONED, REVOKED})
CAME_ONLINE: Final = "LockerBankCameOnline"
WENT_OFFLINE: Final = "LockerBankWentOffline"
LIVENESS_EVENT_TYPES: Final = frozenset({CAME_ONLINE, WENT_OFFLINE})
FOLLOWED_EVENT_TYPES: Final = CREDENTIAL_EVENT_TYPES | LIVENESS_EVENT_TYPES
"""Credentials, and liveness: the provisioning account may not take the pinned client id
of a bank that is online (DESIGN section 4)."""

_SYNCS: weakref.WeakKeyDictionary[UserDirectory, CredentialSync] = weakref.WeakKeyDictionary()


class _Event(Protocol):
    @property
    def event_type(self) -> str: ...


class _Recorded(Protocol):
    """What ``apply`` reads of a ``backend.store.event_store.RecordedEvent``."""

    @property
    def position(self) -> int: ...

    @property
    def aggregate_uuid(self) -> str: ...

    @property
    def event(self) -> _Event: ...


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """One credential event: a bank provisioned (with its password digest) or revoked."""

    position: int
    bank_uuid: str
    password_sha256: str | None
    """None: revoked."""
    client_id: str | None = None
    """Provisioned: the client id it registered with, its pinned id (DESIGN section 4)."""
    online: bool | None = None
    """Not None: a liveness change (came online / went offline), not a credential one."""


class CredentialSync:
    """Applies credential changes to one directory, newest per bank wins."""

    def __init__(self, directory: UserDirectory) -> None:
        self.directory = directory
        self.position: int | None = None
        """The store position the directory reflects (set by the loader/the follower)."""
        self._applied: dict[str, int] = {}
        self._liveness: dict[str, int] = {}

    @classmethod
    def of(cls, directory: UserDirectory) -> CredentialSync:
        """The one sync of ``directory`` (shared by every path that changes it)."""
        sync = _SYNCS.get(directory)
        if sync is None:
            sync = _SYNCS[directory] = cls(directory)
        return sync

    def apply_changes(self, changes: Iterable[CredentialChange]) -> int:
        """Apply ``changes``; returns how many changed the directory. Only the newest
        change of each bank counts, and only if newer than what was applied for it."""
        latest: dict[str, CredentialChange] = {}
        for change in changes:
            if change.online is not None:
                self._apply_liveness(change)
                continue
            seen = latest.get(change.bank_uuid)
            if seen is None or change.position > seen.position:
                latest[change.bank_uuid] = change
        changed = 0
        for uuid, change in latest.items():
            if change.position <= self._applied.get(uuid, 0):
                continue
            try:
                if change.password_sha256 is not None:
                    self.directory.device_provisioned(
                        uuid, change.password_sha256, change.client_id
                    )
                else:
                    self.directory.device_revoked(uuid)
            except ValueError as exc:
                log.error("credentials of bank %s not applied: %s", uuid, exc)
                continue
            self._applied[uuid] = change.position
            changed += 1
        return changed

    def _apply_liveness(self, change: CredentialChange) -> None:
        if change.position <= self._liveness.get(change.bank_uuid, 0):
            return
        self._liveness[change.bank_uuid] = change.position
        self.directory.bank_online(change.bank_uuid, bool(change.online))

    def apply(self, recorded: Iterable[_Recorded]) -> int:
        """Apply the credential events among ``recorded`` (the event store's
        ``RecordedEvent``s); returns how many changed the directory."""
        return self.apply_changes(
            CredentialChange(
                item.position,
                item.aggregate_uuid,
                getattr(item.event, "password_sha256", None)
                if item.event.event_type == PROVISIONED
                else None,
                client_id=getattr(item.event, "client_id", None),
                online=item.event.event_type == CAME_ONLINE
                if item.event.event_type in LIVENESS_EVENT_TYPES
                else None,
            )
            for item in recorded
            if item.event.event_type in FOLLOWED_EVENT_TYPES
        )

    def listener(self, recorded: list[Any]) -> None:
        """For ``LockerService.subscribe``: events this process just recorded."""
        self.apply(recorded)
