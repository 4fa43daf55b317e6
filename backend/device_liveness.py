"""Liveness: heartbeats (a fresh one brings a bank online, which re-asks what is
unanswered and pushes a stale mapping) and last wills (offline at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from backend.domain.clock_offset import next_offset, offset_sample
from backend.domain.contract import Heartbeat
from backend.domain.events import EventMetadata
from backend.domain.messages import command_message
from backend.outbox_marks import reask
from backend.store import command_reads, liveness
from backend.store.batch_reads import chunks, preload
from backend.store.tables import LockerBankRow
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import DEVICE, WritePart


@dataclass(frozen=True)
class HeartbeatIn:
    """A heartbeat as received: whose, when, and whether it was a retained replay."""

    bank_uuid: str
    heartbeat: Heartbeat
    received_at: datetime
    retained: bool = False


class DeviceLiveness(WritePart):
    """Heartbeats and last wills on the shared write path."""

    async def record_heartbeats(self, items: Sequence[HeartbeatIn]) -> int:
        """Update liveness; a fresh heartbeat of a bank not online brings it online. Returns
        how many were taken as life (a stale retained one is not)."""
        taken: list[HeartbeatIn] = []
        await self.path.transact(lambda uow: self._record_heartbeats(uow, items, taken))
        history = self.path.heartbeats
        for item in taken:
            history.record(item.bank_uuid, item.received_at, item.heartbeat.data.timestamp)
        return len(taken)

    def _record_heartbeats(
        self, uow: UnitOfWork, items: Sequence[HeartbeatIn], taken: list[HeartbeatIn]
    ) -> int:
        taken.clear()  # a retried transaction starts again
        if not items:
            return 0
        with uow.locked():  # liveness rows another instance may update meanwhile
            return self._heartbeats_locked(uow, items, taken)

    def _heartbeats_locked(
        self, uow: UnitOfWork, items: Sequence[HeartbeatIn], taken: list[HeartbeatIn]
    ) -> int:
        rows = liveness.load(uow.session, {i.bank_uuid for i in items})
        changed: dict[str, liveness.Liveness] = {}
        came: list[str] = []
        for item in items:
            bank = uow.bank(item.bank_uuid)
            if not bank.exists or bank.status in ("unprovisioned", "revoked"):
                continue
            limit = timedelta(seconds=3 * bank.heartbeat_interval_seconds)
            sent_at = item.heartbeat.data.timestamp
            if item.retained and item.received_at - sent_at > limit:
                continue  # evidence from the past, not of life
            taken.append(item)
            row = changed[item.bank_uuid] = rows[item.bank_uuid]
            row.last_heartbeat_at = item.received_at
            row.device_timestamp = sent_at
            if not item.retained:  # a retained one may be old: its transit time says nothing
                sample = offset_sample(sent_at, item.received_at)
                row.clock_offset_seconds = next_offset(row.clock_offset_seconds, sample)
            row.uptime_seconds = item.heartbeat.data.uptime_seconds
            row.heartbeats += 1
            if bank.status != "online" and uow.execute(
                item.bank_uuid, lambda b: b.came_online(now=uow.now), DEVICE
            ):
                came.append(item.bank_uuid)
        liveness.save(uow.session, changed.values())
        if came:
            self._came_online(uow, came)
        return len(taken)

    def _came_online(self, uow: UnitOfWork, banks: list[str]) -> None:
        """Banks just back online: re-ask what is still unanswered, then make sure each
        device has its mapping. A few queries for the whole batch, not a few per bank (a
        fleet reconnecting after a restart arrives in large batches)."""
        with uow.preloaded(preload, LockerBankRow, banks) as bank_rows:
            for chunk in chunks(banks):
                for txn in command_reads.unanswered_of(uow.session, chunk):
                    if txn.expires_at > uow.now:
                        reask(uow, txn)
            stale = [row.uuid for row in bank_rows if row.config_state in ("unknown", "drifted")]
            in_flight: set[str] = set()
            for chunk in chunks(stale):
                in_flight.update(command_reads.config_in_flight(uow.session, chunk))
            for bank_uuid in stale:
                if bank_uuid not in in_flight:
                    self._push_config(uow, bank_uuid)

    def _push_config(self, uow: UnitOfWork, bank_uuid: str) -> None:
        transaction_id = self.path.new_id()
        ttl = timedelta(seconds=self.settings.config_ttl_seconds)
        uow.execute(
            bank_uuid,
            lambda b: b.request_config(
                transaction_id=transaction_id, requested_by="system", now=uow.now, ttl=ttl
            ),
            EventMetadata(actor="system", correlation_id=transaction_id),
            react=lambda b, events: [
                m for e in events if (m := command_message(bank_uuid, e, b.dialect)) is not None
            ],
        )

    async def record_last_will(self, bank_uuid: str) -> bool:
        """The broker says the device vanished: offline at once."""
        recorded = await self.path.transact(
            lambda uow: uow.execute(
                bank_uuid, lambda b: b.went_offline("last_will", now=uow.now), DEVICE
            )
        )
        return bool(recorded)
