"""The one write path the application modules share, as they see it.

`LockerService` owns it (the database, the aggregate cache, the writer thread, the event
listeners); the device-side modules (provisioning, device input, liveness, sweeps, the
outbox marks) only need what this Protocol names. They import this module, never
`backend.service`, so the application layer has no import cycle (an import-linter layers
contract in pyproject and tests/unit/test_architecture.py hold it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

from backend.config import Settings
from backend.domain.events import EventMetadata
from backend.domain.timeutil import Clock, truncate_ms
from backend.heartbeat_history import HeartbeatHistory
from backend.store.database import Database
from backend.store.unit_of_work import UnitOfWork

T = TypeVar("T")
DEVICE = EventMetadata(actor="device")
SYSTEM = EventMetadata(actor="system")


class WritePath(Protocol):
    """What a device-side module uses of the application service."""

    settings: Settings
    db: Database
    clock: Clock
    heartbeats: HeartbeatHistory
    new_id: Callable[[], str]
    new_secret: Callable[[], str]

    def token_digest(self, token: str) -> str: ...

    async def transact(self, work: Callable[[UnitOfWork], T]) -> T:
        """Run `work` in one write transaction (retried on a version conflict)."""
        ...

    def fold_into_writes(self, fold: Callable[[UnitOfWork], Callable[[], None] | None]) -> None:
        """Run `fold(uow)` first in every write transaction (see `LockerService`)."""
        ...


class WritePart:
    """A module of the application layer: holds the write path and tells the time."""

    def __init__(self, path: WritePath) -> None:
        self.path = path
        self.settings = path.settings

    @property
    def now(self) -> datetime:
        return truncate_ms(self.path.clock.now())
