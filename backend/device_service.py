"""The device side of the application service: what the MQTT runtime calls.

Registrations, command responses (with the dedup tracker), device events (with
`event_id` dedup), heartbeats and last wills, the sweeps for timeouts, expiry,
re-asks and silent banks, and the outbox bookkeeping of the relay. Every method
is one write transaction; batches of heartbeats or responses share one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, select, update
from sqlmodel import col

from backend.domain.bank import LockerBank
from backend.domain.clock_offset import next_offset, offset_sample
from backend.domain.command_status import (
    LATE_ANSWER_STATUSES,
    OPEN_STATUSES,
    CommandStatus,
)
from backend.domain.contract import CommandResponse, DeviceEvent, Heartbeat
from backend.domain.digests import secret_digest
from backend.domain.errors import DomainError
from backend.domain.events import EventMetadata
from backend.domain.messages import (
    OutboundMessage,
    command_message,
    provisioning_error,
    provisioning_success,
    restamp,
)
from backend.domain.outcomes import Outcome, RegistrationResult
from backend.domain.ratelimit import FailureLimiter
from backend.domain.timeutil import truncate_ms
from backend.domain.topics import is_bank_uuid
from backend.store import liveness, outbox
from backend.store.batch_reads import (
    chunks,
    due_commands,
    latest_outbox,
    preload,
    preload_responses,
    replays_unavailable,
    silent_banks,
)
from backend.store.tables import (
    CommandTransactionRow,
    LockerBankRow,
    OutboxRow,
    ProcessedMessageRow,
    RejectedMessageRow,
    table_of,
)
from backend.store.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from backend.service import LockerService

log = logging.getLogger(__name__)
DEVICE = EventMetadata(actor="device")
SYSTEM = EventMetadata(actor="system")
REJECTED_HEAD_BYTES = 2048
DEDUP_TTL = timedelta(days=7)
_ALL = "*"  # the global limiter's one key
HeardAt = Callable[[str], datetime | None]  # bank uuid -> receive time of its last heartbeat


@dataclass(frozen=True)
class HeartbeatIn:
    """A heartbeat as received: whose, when, and whether it was a retained replay."""

    bank_uuid: str
    heartbeat: Heartbeat
    received_at: datetime
    retained: bool = False


@dataclass(frozen=True)
class RelayItem:
    """An outbox row handed to the relay."""

    id: int
    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    bank_uuid: str | None
    transaction_id: str | None
    expires_at: datetime | None


class DeviceService:
    """Device-originated changes and the relay's bookkeeping, on the shared write path."""

    def __init__(self, service: LockerService) -> None:
        self.service = service
        self.settings = service.settings
        self.limiter = FailureLimiter()
        """Failed registrations per client id (DESIGN section 16)."""
        self.global_limiter = FailureLimiter(
            limit=self.settings.provisioning_failures_per_minute, window=timedelta(minutes=1)
        )
        """Failed registrations of all clients together: past this budget an unknown token
        costs one indexed read, no transaction, no outbox row, no reply (issue 14)."""

    @property
    def now(self) -> datetime:
        return truncate_ms(self.service.clock.now())

    # ----- provisioning ------------------------------------------------------------------

    async def register(
        self, token: str, client_id: str, *, dialect: str | None = None
    ) -> RegistrationResult:
        """Handle `locker/register/{token}`; the result says whether a reply is on its way.
        `dialect` is what the registration's form suggests; it decides an `auto` bank's
        dialect, an explicit one wins (DESIGN section 3.1)."""
        if self.limiter.blocked(client_id, self.now):
            return RegistrationResult.RATE_LIMITED
        counted = False
        digest = self.service.token_digest(token)
        if self.global_limiter.blocked(_ALL, self.now):
            if not await self._token_exists(digest):
                return RegistrationResult.RATE_LIMITED
        else:
            # counted before the work (no await in between: registrations handled at the
            # same time cannot all pass the check), taken back on success
            self.global_limiter.failed(_ALL, self.now)
            counted = True
        password = self.service.new_secret()
        password_hash = secret_digest(password)

        def work(uow: UnitOfWork) -> RegistrationResult:
            row = uow.session.execute(
                select(col(LockerBankRow.uuid)).where(col(LockerBankRow.token_hmac) == digest)
            ).first()
            if row is None:
                uow.enqueue(provisioning_error(client_id, uow.now))
                return RegistrationResult.ERROR
            bank_uuid = row[0]
            recorded = uow.execute(
                bank_uuid,
                lambda b: b.provision(
                    digest,
                    client_id=client_id,
                    password_sha256=password_hash,
                    now=uow.now,
                    dialect=dialect,
                ),
                DEVICE,
            )
            if recorded and recorded[0].event_type == "LockerBankProvisioned":
                bank = uow.bank(bank_uuid)
                if dialect and bank.dialect_choice not in ("auto", dialect):
                    log.info(
                        "bank %s registered in the %s form; its explicit dialect %s stays",
                        bank_uuid,
                        dialect,
                        bank.dialect_choice,
                    )
                uow.enqueue(provisioning_success(client_id, bank_uuid, password, uow.now))
                return RegistrationResult.SUCCESS
            uow.enqueue(provisioning_error(client_id, uow.now))
            return RegistrationResult.ERROR

        result = await self.service.transact(work)
        if result is not RegistrationResult.SUCCESS:
            self.limiter.failed(client_id, self.now)
        elif counted:
            self.global_limiter.forgive(_ALL)
        return result

    async def _token_exists(self, digest: str) -> bool:
        def read() -> bool:
            with self.service.db.read_session() as session:
                return (
                    session.execute(
                        select(col(LockerBankRow.uuid)).where(
                            col(LockerBankRow.token_hmac) == digest
                        )
                    ).first()
                    is not None
                )

        return await self.service.db.read(read)

    # ----- command responses -------------------------------------------------------------

    async def record_responses(
        self, items: Sequence[tuple[str, CommandResponse, bytes]]
    ) -> list[Outcome]:
        """Apply responses (bank uuid, parsed, raw payload) in one transaction, in order."""
        return await self.service.transact(lambda uow: self._responses(uow, items))

    async def record_response(
        self, bank_uuid: str, response: CommandResponse, raw: bytes = b""
    ) -> Outcome:
        return (await self.record_responses([(bank_uuid, response, raw)]))[0]

    def _responses(
        self, uow: UnitOfWork, items: Sequence[tuple[str, CommandResponse, bytes]]
    ) -> list[Outcome]:
        if not items:
            return []
        keys = [(b, r.transaction_id) for b, r, _ in items]
        with uow.locked(), uow.preloaded(preload_responses, keys):
            return [self._response(uow, bank, resp, raw) for bank, resp, raw in items]

    def _response(
        self, uow: UnitOfWork, bank_uuid: str, response: CommandResponse, raw: bytes
    ) -> Outcome:
        # Write lock first (PostgreSQL): the tracker row read next must include what another
        # instance committed for this transaction a moment ago (else a duplicate looks like
        # a first answer to a command the aggregate has already finished: "no command").
        with uow.locked():
            txn = uow.session.get(CommandTransactionRow, (bank_uuid, response.transaction_id))
        if txn is None:
            return Outcome.rejected("unknown transaction for this bank")
        if txn.action != response.action:
            return Outcome.rejected(f"action {response.action} does not match")
        if txn.first_seen_at is not None:
            txn.last_seen_at = uow.now
            txn.duplicate_count += 1
            return Outcome.duplicate()
        txn.first_seen_at = uow.now
        txn.last_seen_at = uow.now
        txn.payload_hash = hashlib.sha256(raw).hexdigest() if raw else None
        late = txn.status in LATE_ANSWER_STATUSES
        try:
            uow.execute(
                bank_uuid,
                lambda b: b.record_response(
                    response.transaction_id,
                    result=response.result,
                    now=uow.now,
                    error_code=response.error_code,
                    message=response.message,
                    applied_config_hash=response.applied_config_hash,
                ),
                EventMetadata(actor="device", correlation_id=response.transaction_id),
            )
        except DomainError as exc:
            return Outcome.rejected(str(exc))
        return Outcome.applied(late=late)

    # ----- device events -----------------------------------------------------------------

    async def record_event(self, bank_uuid: str, event: DeviceEvent) -> Outcome:
        """`door_state_changed`, `qr_scanned` or another recorded device event: applied or
        a duplicate (a domain refusal raises `DomainError`)."""

        def work(uow: UnitOfWork) -> Outcome:
            with uow.locked():  # the dedup check below sees what another instance committed
                return self._event(uow, bank_uuid, event)

        return await self.service.transact(work)

    def _event(self, uow: UnitOfWork, bank_uuid: str, event: DeviceEvent) -> Outcome:
        """Record one device event once (its `event_id` is the dedup key); under the lock."""
        key = event.dedup_key()
        if key is not None:
            if uow.session.get(ProcessedMessageRow, (bank_uuid, key)) is not None:
                return Outcome.duplicate()
            uow.session.add(
                ProcessedMessageRow(bank_uuid=bank_uuid, message_key=key, processed_at=uow.now)
            )
            uow.session.flush()  # visible to the next lookup in this transaction
        if event.event == "door_state_changed":
            door = event.door_data()
            uow.execute(
                bank_uuid,
                lambda b: b.door_state_changed(
                    door.compartment_number, door.state, now=uow.now, event_id=key
                ),
                DEVICE,
            )
        elif event.event != "qr_scanned":
            uow.execute(
                bank_uuid,
                lambda b: b.device_event(event.event, event.data, now=uow.now, event_id=key),
                DEVICE,
            )
        else:
            qr = event.qr_data()
            uow.execute(
                bank_uuid,
                lambda b: b.qr_scanned(qr.qr_payload, qr.scanner, now=uow.now, event_id=key),
                DEVICE,
            )
        return Outcome.applied()

    async def record_door_snapshot(
        self, bank_uuid: str, doors: Sequence[tuple[int, str]]
    ) -> list[int]:
        """Upstream's retained door snapshot: record each real change. Returns the numbers
        the bank does not have (refused alone; the other entries still count)."""

        def work(uow: UnitOfWork) -> list[int]:
            bank = uow.bank(bank_uuid)
            unknown = [n for n, _ in doors if n not in bank.compartments]
            for number, state in doors:
                if number in bank.compartments:
                    uow.execute(
                        bank_uuid,
                        partial(
                            LockerBank.door_state_changed, number=number, state=state, now=uow.now
                        ),
                        DEVICE,
                    )
            return unknown

        return await self.service.transact(work)

    # ----- liveness ----------------------------------------------------------------------

    async def record_heartbeats(self, items: Sequence[HeartbeatIn]) -> int:
        """Update liveness; a fresh heartbeat of a bank not online brings it online. Returns
        how many were taken as life (a stale retained one is not)."""
        taken: list[HeartbeatIn] = []
        await self.service.transact(lambda uow: self._record_heartbeats(uow, items, taken))
        history = self.service.heartbeats
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
                for txn in uow.session.execute(
                    select(CommandTransactionRow)
                    .where(col(CommandTransactionRow.locker_uuid).in_(chunk))
                    .where(col(CommandTransactionRow.status) == CommandStatus.SENT)
                    .where(col(CommandTransactionRow.first_seen_at).is_(None))
                    .order_by(col(CommandTransactionRow.requested_at))
                ).scalars():
                    if txn.expires_at > uow.now:
                        self._reask_one(uow, txn)
            stale = [row.uuid for row in bank_rows if row.config_state in ("unknown", "drifted")]
            in_flight: set[str] = set()
            for chunk in chunks(stale):
                in_flight.update(
                    uow.session.execute(
                        select(col(CommandTransactionRow.locker_uuid))
                        .where(col(CommandTransactionRow.locker_uuid).in_(chunk))
                        .where(col(CommandTransactionRow.action) == "apply_config")
                        .where(col(CommandTransactionRow.status).in_(OPEN_STATUSES))
                    ).scalars()
                )
            for bank_uuid in stale:
                if bank_uuid not in in_flight:
                    self._push_config(uow, bank_uuid)

    def _push_config(self, uow: UnitOfWork, bank_uuid: str) -> None:
        transaction_id = self.service.new_id()
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
        recorded = await self.service.transact(
            lambda uow: uow.execute(
                bank_uuid, lambda b: b.went_offline("last_will", now=uow.now), DEVICE
            )
        )
        return bool(recorded)

    # ----- sweeps ------------------------------------------------------------------------

    async def sweep(self, heard: HeardAt | None = None, *, settled: bool = True) -> dict[str, int]:
        """Silent banks offline, timeouts, expiries and re-asks; returns counts. `heard`
        tells when the receive side last got a heartbeat of a bank that the store may not
        show yet (it is still queued): such a bank is not silent. Not `settled` (the
        runtime is away from the broker, or still handling what the broker queued for it
        meanwhile): nobody is called silent and no sent command is judged, since its
        answer may be in that backlog; commands never sent still time out and expire."""
        return await self.service.transact(lambda uow: self._sweep(uow, heard, settled))

    def _sweep(
        self, uow: UnitOfWork, heard: HeardAt | None = None, settled: bool = True
    ) -> dict[str, int]:
        now = uow.now
        counts = {"offline": 0, "timeout": 0, "expired": 0, "reasked": 0}
        for uuid, interval in silent_banks(uow.session, now) if settled else ():
            at = heard(uuid) if heard is not None else None
            if at is not None and now - at <= timedelta(seconds=3 * interval):
                continue
            if uow.execute(uuid, lambda b: b.went_offline("heartbeat_timeout", now=now), SYSTEM):
                counts["offline"] += 1
        timeout = timedelta(seconds=self.settings.command_timeout)
        retry = timedelta(seconds=self.settings.command_retry_after)
        candidates = due_commands(uow.session, now, now - min(timeout, retry))
        unanswered = [
            (t.locker_uuid, t.transaction_id)
            for t in candidates
            if t.status == CommandStatus.SENT and t.first_seen_at is None
        ]
        latest = latest_outbox(uow.session, unanswered)
        for txn in candidates:
            if not settled and txn.status == CommandStatus.SENT:
                continue
            bank, tid = txn.locker_uuid, txn.transaction_id
            meta = EventMetadata(actor="system", correlation_id=tid)
            if now >= txn.expires_at:
                doubt = bool(txn.in_doubt)
                if uow.execute(
                    bank,
                    partial(LockerBank.expire, transaction_id=tid, now=now, outcome_unknown=doubt),
                    meta,
                ):
                    counts["expired"] += 1
                    self._drop_outbox(uow, bank, tid, "expired")
            elif txn.status == CommandStatus.SENT and txn.sent_at and now - txn.sent_at >= timeout:
                if uow.execute(
                    bank, partial(LockerBank.time_out, transaction_id=tid, now=now), meta
                ):
                    counts["timeout"] += 1
                    self._drop_outbox(uow, bank, tid, "timeout")
            elif txn.status == CommandStatus.SENT and txn.first_seen_at is None:
                last = latest.get((bank, tid))
                if last is not None and last.status == "sent" and last.at <= now - retry:
                    counts["reasked"] += self._reask_one(uow, txn)
        return counts

    async def recover_after_restart(self) -> dict[str, int]:
        """At start: every sent, unanswered, unexpired command may have been answered while
        no one listened (aiomqtt acks before the handler runs; a crash loses the answer).
        Ask each again at once (a seed device replays its stored answer without acting
        twice); a bank whose dialect never replays answers (openlocker) cannot tell us, so
        its command is marked in doubt: unanswered at expiry it ends `unknown`, not
        `expired` ("outcome unknown - check the door")."""
        return await self.service.transact(self._recover)

    def _recover(self, uow: UnitOfWork) -> dict[str, int]:
        with uow.locked():  # the command rows read next may be changed by another instance
            return self._recover_locked(uow)

    def _recover_locked(self, uow: UnitOfWork) -> dict[str, int]:
        counts = {"reasked": 0, "in_doubt": 0}
        rows = list(
            uow.session.execute(
                select(CommandTransactionRow)
                .where(col(CommandTransactionRow.status) == CommandStatus.SENT)
                .where(col(CommandTransactionRow.first_seen_at).is_(None))
                .where(col(CommandTransactionRow.expires_at) > uow.now)
                .order_by(col(CommandTransactionRow.requested_at))
            ).scalars()
        )
        if not rows:
            return counts
        silent = replays_unavailable(uow.session, {r.locker_uuid for r in rows})
        for txn in rows:
            if txn.locker_uuid in silent:
                txn.in_doubt = True
                counts["in_doubt"] += 1
            else:
                counts["reasked"] += self._reask_one(uow, txn)
        return counts

    def _reask_one(self, uow: UnitOfWork, txn: CommandTransactionRow) -> int:
        """Publish the same command again (same transaction_id) unless one is queued."""
        rows = list(
            uow.session.execute(
                select(OutboxRow)
                .where(col(OutboxRow.bank_uuid) == txn.locker_uuid)
                .where(col(OutboxRow.transaction_id) == txn.transaction_id)
                .order_by(col(OutboxRow.id))
            ).scalars()
        )
        if not rows or any(r.status == "pending" for r in rows):
            return 0
        first = rows[0]
        uow.enqueue(
            OutboundMessage(
                kind="command",
                topic=first.topic,
                payload=restamp(first.payload.encode()),  # a new publish: a new message_id
                bank_uuid=txn.locker_uuid,
                transaction_id=txn.transaction_id,
                expires_at=txn.expires_at,
            )
        )
        return 1

    def _drop_outbox(self, uow: UnitOfWork, bank: str, transaction_id: str, why: str) -> None:
        uow.session.execute(
            update(OutboxRow)
            .where(col(OutboxRow.bank_uuid) == bank)
            .where(col(OutboxRow.transaction_id) == transaction_id)
            .where(col(OutboxRow.status) == "pending")
            .values(status=why)
        )

    # ----- the relay ---------------------------------------------------------------------

    async def outbox_due(self, limit: int = 100) -> list[RelayItem]:
        now = self.now

        def work() -> list[RelayItem]:
            with self.service.db.read_session() as session:
                return [
                    RelayItem(
                        id=r.id or 0,
                        kind=r.kind,
                        topic=r.topic,
                        payload=r.payload.encode(),
                        qos=r.qos,
                        retain=r.retain,
                        bank_uuid=r.bank_uuid,
                        transaction_id=r.transaction_id,
                        expires_at=r.expires_at,
                    )
                    for r in outbox.pending(session, now, limit)
                ]

        return await self.service.db.read(work)

    async def outbox_published(self, item: RelayItem) -> None:
        await self.outbox_published_many([item])

    async def outbox_published_many(self, items: Sequence[RelayItem]) -> None:
        """After the broker's PUBACKs: rows sent; a command's first send is `CommandSent`.
        One transaction for a relay batch."""

        def work(uow: UnitOfWork) -> None:
            if not items:
                return
            # Lock order: the write lock before any row lock. A lock holder applying a
            # command's response needs its command_transactions row; taking that row first
            # and the lock after deadlocks two instances.
            with uow.locked():
                self._published(uow, items)

        await self.service.transact(work)

    def _published(self, uow: UnitOfWork, items: Sequence[RelayItem]) -> None:
        commands = [
            (i.bank_uuid, i.transaction_id)
            for i in items
            if i.kind == "command" and i.bank_uuid and i.transaction_id
        ]
        with uow.preloaded(preload_responses, commands):
            table = table_of(OutboxRow)  # Core executemany (not the ORM's bulk by key)
            sent = update(table).where(table.c.id == bindparam("row_id"))
            values = {"status": "sent", "sent_at": uow.now, "attempts": table.c.attempts + 1}
            for kind_items, extra in (
                ([i for i in items if i.kind != "provisioning_reply"], {}),
                # the password leaves the database once sent
                ([i for i in items if i.kind == "provisioning_reply"], {"payload": ""}),
            ):
                if kind_items:
                    uow.session.execute(
                        sent.values(**values, **extra), [{"row_id": i.id} for i in kind_items]
                    )
            for bank_uuid, tid in commands:
                assert bank_uuid is not None and tid is not None
                txn = uow.session.get(CommandTransactionRow, (bank_uuid, tid))
                if txn is not None:
                    txn.attempts = (txn.attempts or 0) + 1
                uow.execute(
                    bank_uuid,
                    partial(LockerBank.mark_sent, transaction_id=tid, now=uow.now),
                    EventMetadata(actor="system", correlation_id=tid),
                )

    async def outbox_expired(self, item: RelayItem) -> None:
        """A command found past `expires_at` before publication: never sent, `CommandExpired`."""

        def work(uow: UnitOfWork) -> None:
            if not item.bank_uuid:
                outbox.mark(uow.session, item.id, status="expired")
                return
            with uow.locked():  # lock order: the write lock before the outbox row's lock
                outbox.mark(uow.session, item.id, status="expired")
                if item.transaction_id:
                    tid = item.transaction_id
                    uow.execute(
                        item.bank_uuid,
                        lambda b: b.expire(tid, now=uow.now),
                        EventMetadata(actor="system", correlation_id=tid),
                    )

        await self.service.transact(work)

    async def outbox_failed(self, item: RelayItem, error: str, retry_at: datetime) -> None:
        def work(uow: UnitOfWork) -> None:
            outbox.mark(
                uow.session,
                item.id,
                attempts=col(OutboxRow.attempts) + 1,
                last_error=error[:500],
                available_at=retry_at,
            )

        await self.service.transact(work)

    async def outbox_depth(self) -> int:
        def work() -> int:
            with self.service.db.read_session() as session:
                return outbox.depth(session)

        return await self.service.db.read(work)

    # ----- rejects and housekeeping ------------------------------------------------------

    async def record_rejected(self, topic: str, payload: bytes, reason: str) -> None:
        head = payload[:REJECTED_HEAD_BYTES].decode("utf-8", errors="replace").replace("\x00", "?")

        def work(uow: UnitOfWork) -> None:
            uow.session.add(
                RejectedMessageRow(
                    topic=topic[:500], payload_head=head, reason=reason[:500], received_at=uow.now
                )
            )

        await self.service.transact(work)

    async def prune(self, rejected_ttl: timedelta = timedelta(days=30)) -> None:
        """Drop dedup keys past their TTL and old rejected messages."""

        def work(uow: UnitOfWork) -> None:
            uow.session.execute(
                delete(ProcessedMessageRow).where(
                    col(ProcessedMessageRow.processed_at) < uow.now - DEDUP_TTL
                )
            )
            uow.session.execute(
                delete(RejectedMessageRow).where(
                    col(RejectedMessageRow.received_at) < uow.now - rejected_ttl
                )
            )

        await self.service.transact(work)

    async def bank_exists(self, bank_uuid: str) -> bool:
        """Does this bank exist (one indexed read; the uuid as `get_bank` takes it)?"""
        uuid = bank_uuid.strip().lower()
        if not is_bank_uuid(uuid):
            return False

        def read() -> bool:
            with self.service.db.read_session() as session:
                query = select(col(LockerBankRow.uuid)).where(col(LockerBankRow.uuid) == uuid)
                return session.execute(query).first() is not None

        return await self.service.db.read(read)

    async def bank_uuids(self) -> set[str]:
        """Every bank's uuid (banks are never deleted): one query."""

        def read() -> set[str]:
            with self.service.db.read_session() as session:
                return set(session.execute(select(col(LockerBankRow.uuid))).scalars())

        return await self.service.db.read(read)
