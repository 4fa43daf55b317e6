"""Liveness: heartbeats (a fresh one brings a bank online, which re-asks what is
unanswered and pushes a stale mapping) and last wills (offline at once).

Two steps for the receive side (issue 19): `record_liveness` writes the heartbeats of a
batch (cheap, one Core statement or two) and names the banks heard that are not online;
`bring_online` then does the costly part for those (came-online event, re-asks, config
push) in transactions of its own, so a fleet coming online at once does not hold up the
heartbeats of the banks already online. The second step is decided again from the
bank's status in its own transaction; if it is lost (a crash between the two), the
bank's next heartbeat brings it online. `record_heartbeats` does both in one.
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
from backend.store.alert_projection import newest_offline_alerts
from backend.store.batch_reads import chunks, preload
from backend.store.tables import LockerBankRow
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import DEVICE, WritePart


@dataclass(frozen=True)
class LivenessRecorded:
    """What `record_liveness` did: heartbeats taken as life, and the banks among them that
    are not online (for `bring_online`)."""

    taken: int
    arriving: frozenset[str]


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
        """Update liveness; a fresh heartbeat of a bank not online brings it online (both
        steps in one transaction). Returns how many were taken as life (a stale retained
        one is not)."""
        taken: list[HeartbeatIn] = []
        await self.path.transact(lambda uow: self._record(uow, items, taken, set(), online=True))
        self._remember(taken)
        return len(taken)

    async def record_liveness(self, items: Sequence[HeartbeatIn]) -> LivenessRecorded:
        """Update liveness only; the banks heard that are not online are returned for
        `bring_online` (not brought online here)."""
        taken: list[HeartbeatIn] = []
        arriving: set[str] = set()
        await self.path.transact(lambda uow: self._record(uow, items, taken, arriving))
        self._remember(taken)
        return LivenessRecorded(len(taken), frozenset(arriving))

    async def bring_online(self, banks: Sequence[str]) -> list[bool]:
        """Banks heard from (`record_liveness`) that are not online: bring each online, in
        one transaction. Per bank, whether it came online now (False: already online,
        revoked, or gone meanwhile)."""
        came: set[str] = set()
        await self.path.transact(lambda uow: self._bring_online(uow, banks, came))
        return [bank in came for bank in banks]

    def _remember(self, taken: list[HeartbeatIn]) -> None:
        history = self.path.heartbeats
        for item in taken:
            history.record(item.bank_uuid, item.received_at, item.heartbeat.data.timestamp)

    def _record(
        self,
        uow: UnitOfWork,
        items: Sequence[HeartbeatIn],
        taken: list[HeartbeatIn],
        arriving: set[str],
        *,
        online: bool = False,
    ) -> int:
        taken.clear()  # a retried transaction starts again
        arriving.clear()
        if not items:
            return 0
        with uow.locked():  # liveness rows another instance may update meanwhile
            self._heartbeats_locked(uow, items, taken, arriving)
            if online and arriving:
                self._arrive(uow, sorted(arriving), set())
        return len(taken)

    def _heartbeats_locked(
        self,
        uow: UnitOfWork,
        items: Sequence[HeartbeatIn],
        taken: list[HeartbeatIn],
        arriving: set[str],
    ) -> None:
        rows = liveness.load(uow.session, {i.bank_uuid for i in items})
        changed: dict[str, liveness.Liveness] = {}
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
            if bank.status != "online":
                arriving.add(item.bank_uuid)
        liveness.save(uow.session, changed.values())

    def _bring_online(self, uow: UnitOfWork, banks: Sequence[str], came: set[str]) -> None:
        came.clear()  # a retried transaction starts again
        with uow.locked():
            self._arrive(uow, banks, came)

    def _arrive(self, uow: UnitOfWork, banks: Sequence[str], came: set[str]) -> None:
        with (
            uow.preloaded(preload, LockerBankRow, banks) as bank_rows,
            newest_offline_alerts(uow.session, banks),
        ):
            # Each bank once, and its came-online projections read only its own rows: no
            # flush before each of them (one for the batch, before the re-asks read).
            with uow.session.no_autoflush:
                for bank_uuid in banks:
                    bank = uow.bank(bank_uuid)
                    if not bank.exists or bank.status in ("unprovisioned", "revoked", "online"):
                        continue
                    if uow.execute(bank_uuid, lambda b: b.came_online(now=uow.now), DEVICE):
                        came.add(bank_uuid)
            if came:
                self._came_online(uow, [r for r in bank_rows if r.uuid in came])

    def _came_online(self, uow: UnitOfWork, bank_rows: list[LockerBankRow]) -> None:
        """Banks just back online (their rows preloaded): re-ask what is still unanswered,
        then make sure each device has its mapping. A few queries for the whole batch, not
        a few per bank (a fleet reconnecting after a restart arrives in large batches)."""
        banks = [row.uuid for row in bank_rows]
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
