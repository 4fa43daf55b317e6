"""Where device accounts live besides our store: the narrow interface the provisioning and
revocation paths call (DESIGN 5.1).

In `hook` mode the broker asks us about every CONNECT and message, so the store is the
only account directory and every call here is a no-op (`NoAccountDirectory`). In `dynsec`
mode Mosquitto's dynamic-security plugin holds the accounts itself and
`backend.dynsec.directory.DynsecDirectory` keeps it in step with the store.

The calls are made *after* the store has decided (the store stays the truth): a failure
here never undoes a provisioning or a revocation; it is reported (`health`) and repaired by
the next `reconcile` (at every start, and whenever the admin connection comes back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from backend.config import Settings
    from backend.service import LockerService


@dataclass(frozen=True)
class AccountsHealth:
    """What `/healthz` shows for the account directory."""

    ok: bool
    detail: str


class AccountDirectory(Protocol):
    """The broker-side accounts of the fleet (a no-op where the broker asks our hook)."""

    @property
    def active(self) -> bool:
        """True if this directory does anything (dynsec), False for the hook-mode no-op."""
        ...

    async def start(self, service: LockerService) -> None:
        """Connect, bootstrap the backend and provisioning accounts, reconcile the fleet."""
        ...

    async def close(self) -> None: ...

    async def provisioned(self, bank_uuid: str, client_id: str, password: str) -> None:
        """A bank was (re)provisioned: its account with this password, pinned to `client_id`,
        enabled, with exactly its DESIGN 4 topics. Must be done before the device learns the
        password (the relay calls it before publishing the reply). Raises on failure."""
        ...

    async def revoked(self, bank_uuid: str) -> None:
        """A bank was revoked: its account disabled (which disconnects it). Raises on failure."""
        ...

    async def deleted(self, bank_uuid: str) -> None:
        """A bank is gone: its account and role removed. Raises on failure."""
        ...

    def health(self) -> AccountsHealth | None:
        """None where there is nothing to report (hook mode)."""
        ...


class NoAccountDirectory:
    """Hook mode: the store is the account directory; nothing to keep in step."""

    active = False

    async def start(self, service: LockerService) -> None:
        return None

    async def close(self) -> None:
        return None

    async def provisioned(self, bank_uuid: str, client_id: str, password: str) -> None:
        return None

    async def revoked(self, bank_uuid: str) -> None:
        return None

    async def deleted(self, bank_uuid: str) -> None:
        return None

    def health(self) -> AccountsHealth | None:
        return None


def account_directory_for(settings: Settings) -> AccountDirectory:
    """The directory the settings ask for (`AUTH_MODE`, `LOCKER_BROKER`)."""
    if not settings.dynsec:
        return NoAccountDirectory()
    from backend.dynsec.directory import DynsecDirectory

    return DynsecDirectory(settings)
