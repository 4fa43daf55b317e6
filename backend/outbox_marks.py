"""The outbox's bookkeeping on the write path: what the relay reports (published,
expired, failed), its reads (due rows, depth), and the two marks the sweeps and
liveness make (ask a command again, drop a finished command's queued publishes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from backend.domain.bank import LockerBank
from backend.domain.events import EventMetadata
from backend.domain.messages import OutboundMessage, restamp
from backend.store import outbox
from backend.store.batch_reads import preload_responses
from backend.store.tables import CommandTransactionRow
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import WritePart


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


def reask(uow: UnitOfWork, txn: CommandTransactionRow) -> int:
    """Publish the same command again (same transaction_id) unless one is queued."""
    rows = outbox.queued_for(uow.session, txn.locker_uuid, txn.transaction_id)
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


def drop_pending(uow: UnitOfWork, bank: str, transaction_id: str, why: str) -> None:
    """A command that ended (expired, timed out): its queued publishes never go out."""
    outbox.drop_pending(uow.session, bank, transaction_id, why)


class OutboxMarks(WritePart):
    """The relay's bookkeeping: each report is one write transaction."""

    async def outbox_due(self, limit: int = 100) -> list[RelayItem]:
        now = self.now

        def work() -> list[RelayItem]:
            with self.path.db.read_session() as session:
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

        return await self.path.db.read(work)

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

        await self.path.transact(work)

    def _published(self, uow: UnitOfWork, items: Sequence[RelayItem]) -> None:
        commands = [
            (i.bank_uuid, i.transaction_id)
            for i in items
            if i.kind == "command" and i.bank_uuid and i.transaction_id
        ]
        with uow.preloaded(preload_responses, commands):
            outbox.mark_sent(
                uow.session, [i.id for i in items if i.kind != "provisioning_reply"], uow.now
            )
            # the password leaves the database once sent
            outbox.mark_sent(
                uow.session,
                [i.id for i in items if i.kind == "provisioning_reply"],
                uow.now,
                clear_payload=True,
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

        await self.path.transact(work)

    async def outbox_failed(self, item: RelayItem, error: str, retry_at: datetime) -> None:
        def work(uow: UnitOfWork) -> None:
            outbox.mark_failed(uow.session, item.id, error[:500], retry_at)

        await self.path.transact(work)

    async def outbox_depth(self) -> int:
        def work() -> int:
            with self.path.db.read_session() as session:
                return outbox.depth(session)

        return await self.path.db.read(work)
