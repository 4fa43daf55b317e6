"""What devices report: command responses (with the dedup tracker), device events
(with `event_id` dedup), the retained door snapshot, and messages refused as invalid.
Every method is one write transaction; a batch of responses shares one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial

from backend.domain.bank import LockerBank
from backend.domain.command_status import LATE_ANSWER_STATUSES
from backend.domain.contract import CommandResponse, DeviceEvent
from backend.domain.errors import DomainError
from backend.domain.events import DomainEvent, EventMetadata
from backend.domain.outcomes import Outcome
from backend.store import answers
from backend.store.batch_reads import preload_responses
from backend.store.event_store import RecordedEvent
from backend.store.tables import CommandTransactionRow, ProcessedMessageRow, RejectedMessageRow
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import DEVICE, WritePart

REJECTED_HEAD_BYTES = 2048


class DeviceInput(WritePart):
    """Responses and events on the shared write path."""

    async def record_responses(
        self, items: Sequence[tuple[str, CommandResponse, bytes]]
    ) -> list[Outcome]:
        """Apply responses (bank uuid, parsed, raw payload) in one transaction, in order."""
        return await self.path.transact(lambda uow: self._responses(uow, items))

    async def record_response(
        self, bank_uuid: str, response: CommandResponse, raw: bytes = b""
    ) -> Outcome:
        return (await self.record_responses([(bank_uuid, response, raw)]))[0]

    def _responses(
        self, uow: UnitOfWork, items: Sequence[tuple[str, CommandResponse, bytes]]
    ) -> list[Outcome]:
        if not items:
            return []
        with uow.locked():
            outcomes = self._responses_set_wise(uow, items)
            if outcomes is not None:
                return outcomes
            return self._responses_one_by_one(uow, items)

    def _responses_one_by_one(
        self, uow: UnitOfWork, items: Sequence[tuple[str, CommandResponse, bytes]]
    ) -> list[Outcome]:
        """The batch item by item through the ORM (the rows preloaded), under the write lock."""
        keys = [(b, r.transaction_id) for b, r, _ in items]
        with uow.locked(), uow.preloaded(preload_responses, keys):
            return [self._response(uow, bank, resp, raw) for bank, resp, raw in items]

    def _responses_set_wise(
        self, uow: UnitOfWork, items: Sequence[tuple[str, CommandResponse, bytes]]
    ) -> list[Outcome] | None:
        """The batch with the tracker rows as tuples and the read models written with Core
        (`backend.store.answers`): the same outcomes, rows and events as `_response` per
        item, at a fraction of the CPU. None when the batch needs the per-item way: a
        decision the domain refuses (`_response` keeps that item's tracker change and
        rejects it), or an event `answers.save` does not project. Nothing is written or
        applied before that is known, so the per-item way then starts from scratch.
        Under the write lock (the caller's)."""
        now = uow.now
        trackers = answers.load(uow.session, {(b, r.transaction_id) for b, r, _ in items})
        outcomes: list[Outcome] = []
        decided: list[tuple[answers.Tracker, list[DomainEvent]]] = []
        for bank_uuid, response, raw in items:
            tracker = trackers.get((bank_uuid, response.transaction_id))
            if tracker is None:
                outcomes.append(Outcome.rejected("unknown transaction for this bank"))
                continue
            if tracker.action != response.action:
                outcomes.append(Outcome.rejected(f"action {response.action} does not match"))
                continue
            if tracker.first_seen_at is not None:
                tracker.seen_again(now)
                outcomes.append(Outcome.duplicate())
                continue
            tracker.seen_first(now, hashlib.sha256(raw).hexdigest() if raw else None)
            late = tracker.status in LATE_ANSWER_STATUSES
            # Decided on the bank as it stands: an earlier answer of this batch to the same
            # bank concerns another transaction (a second answer to this one is a duplicate
            # above), and `record_response` reads only this transaction's command.
            try:
                events = uow.bank(bank_uuid).record_response(
                    response.transaction_id,
                    result=response.result,
                    now=now,
                    error_code=response.error_code,
                    message=response.message,
                    applied_config_hash=response.applied_config_hash,
                )
            except DomainError:
                return None
            if not answers.projects(events):
                return None
            if events:
                decided.append((tracker, events))
            outcomes.append(Outcome.applied(late=late))
        answered: list[tuple[answers.Tracker, RecordedEvent]] = []
        for tracker, events in decided:
            recorded = uow.execute(
                tracker.bank_uuid,
                _decided(events),
                EventMetadata(actor="device", correlation_id=tracker.transaction_id),
                projected_by_caller=True,
            )
            answered.extend((tracker, r) for r in recorded)
        answers.save(uow.session, trackers.values(), answered)
        return outcomes

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

        return await self.path.transact(work)

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

        return await self.path.transact(work)

    async def record_rejected(self, topic: str, payload: bytes, reason: str) -> None:
        head = payload[:REJECTED_HEAD_BYTES].decode("utf-8", errors="replace").replace("\x00", "?")

        def work(uow: UnitOfWork) -> None:
            uow.session.add(
                RejectedMessageRow(
                    topic=topic[:500], payload_head=head, reason=reason[:500], received_at=uow.now
                )
            )

        await self.path.transact(work)


def _decided(events: list[DomainEvent]) -> Callable[[LockerBank], list[DomainEvent]]:
    """A decision already taken (on this bank, in this transaction)."""
    return lambda _bank: events
