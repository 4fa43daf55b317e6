"""The device side of the application service: what the MQTT runtime calls.

A thin facade over the modules that do the work, each on the shared write path
(`backend.write_path`): `provisioning` (registrations), `device_input` (responses,
events, door snapshots, rejects), `device_liveness` (heartbeats, last wills), `sweeps`
(timeouts, expiry, re-asks, silent banks, pruning) and `outbox_marks` (the relay's
bookkeeping). Callers keep one object (`LockerService.devices`) and one import.
"""

from __future__ import annotations

from datetime import datetime

from backend.device_input import REJECTED_HEAD_BYTES, DeviceInput
from backend.device_liveness import DeviceLiveness, HeartbeatIn
from backend.domain.topics import is_bank_uuid
from backend.outbox_marks import OutboxMarks, RelayItem
from backend.provisioning import Provisioning
from backend.store import known_banks
from backend.sweeps import DEDUP_TTL, HeardAt, Sweeps
from backend.write_path import WritePath

__all__ = [
    "DEDUP_TTL",
    "REJECTED_HEAD_BYTES",
    "DeviceService",
    "HeardAt",
    "HeartbeatIn",
    "RelayItem",
]


class DeviceService:
    """Device-originated changes and the relay's bookkeeping, on the shared write path."""

    def __init__(self, path: WritePath) -> None:
        self.path = path
        self.provisioning = Provisioning(path)
        self.input = DeviceInput(path)
        self.liveness = DeviceLiveness(path)
        self.sweeps = Sweeps(path)
        self.outbox = OutboxMarks(path)
        self.limiter = self.provisioning.limiter
        self.global_limiter = self.provisioning.global_limiter
        self.register = self.provisioning.register
        self.record_responses = self.input.record_responses
        self.record_response = self.input.record_response
        self._responses = self.input._responses
        self.record_event = self.input.record_event
        self.record_door_snapshot = self.input.record_door_snapshot
        self.record_rejected = self.input.record_rejected
        self.record_heartbeats = self.liveness.record_heartbeats
        self.record_liveness = self.liveness.record_liveness
        self.bring_online = self.liveness.bring_online
        self.record_last_will = self.liveness.record_last_will
        self.sweep = self.sweeps.sweep
        self._sweep = self.sweeps._sweep
        self.recover_after_restart = self.sweeps.recover_after_restart
        self.prune = self.sweeps.prune
        self.outbox_due = self.outbox.outbox_due
        self.outbox_published = self.outbox.outbox_published
        self.outbox_published_many = self.outbox.outbox_published_many
        self.outbox_expired = self.outbox.outbox_expired
        self.outbox_failed = self.outbox.outbox_failed
        self.outbox_depth = self.outbox.outbox_depth

    @property
    def now(self) -> datetime:
        return self.provisioning.now

    async def bank_exists(self, bank_uuid: str) -> bool:
        """Does this bank exist (one indexed read; the uuid as `get_bank` takes it)?"""
        uuid = bank_uuid.strip().lower()
        if not is_bank_uuid(uuid):
            return False

        def read() -> bool:
            with self.path.db.read_session() as session:
                return known_banks.exists(session, uuid)

        return await self.path.db.read(read)

    async def bank_uuids(self) -> set[str]:
        """Every bank's uuid (banks are never deleted): one query."""

        def read() -> set[str]:
            with self.path.db.read_session() as session:
                return known_banks.all_uuids(session)

        return await self.path.db.read(read)
