"""The outbox's bookkeeping on the write path: what the relay reports (published,
expired, failed), its reads (due rows, depth), and the two marks the sweeps and
liveness make (ask a command again, drop a finished command's queued publishes).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from backend.domain.bank import LockerBank
from backend.domain.events import EventMetadata
from backend.domain.messages import OutboundMessage, restamp
from backend.store import outbox
from backend.store.batch_reads import preload_responses
from backend.store.outbox import RelayItem
from backend.store.tables import CommandTransactionRow
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import WritePart, WritePath


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
    uow.outbox_dropped = True


class UnmarkedSends:
    """Rows the relay has published (PUBACK received) whose `sent` mark is not written yet.

    Touched by the event loop (the relay adds a batch, and forgets it) and by the writer
    thread (a transaction writes the marks and, once committed, says so): under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: list[_Unmarked] = []

    def add(self, items: Sequence[RelayItem], on_written: Callable[[], None]) -> _Unmarked:
        batch = _Unmarked(list(items), on_written)
        with self._lock:
            self._batches.append(batch)
        return batch

    def forget(self, batch: _Unmarked) -> None:
        with self._lock:
            if batch in self._batches:
                self._batches.remove(batch)

    def waiting(self) -> list[_Unmarked]:
        """The batches whose marks are not written (a snapshot)."""
        if not self._batches:  # the common case, without the lock
            return []
        with self._lock:
            return [b for b in self._batches if not b.written]


@dataclass
class _Unmarked:
    items: list[RelayItem]
    on_written: Callable[[], None]
    written: bool = False


class OutboxMarks(WritePart):
    """The relay's bookkeeping: each report is one write transaction, except the `sent`
    marks of `outbox_published_soon`, which the next write transaction of this process
    carries (a command's response usually: one transaction fewer per command)."""

    def __init__(self, path: WritePath) -> None:
        super().__init__(path)
        self.unmarked = UnmarkedSends()
        path.fold_into_writes(self._fold_marks)

    async def outbox_due(self, limit: int = 100) -> list[RelayItem]:
        """The due rows, oldest first."""
        return list((await self.outbox_due_rows(limit)).items)

    async def outbox_due_rows(self, limit: int = 100) -> outbox.DueRows:
        """The due rows, and whether nothing else is pending (the relay's read)."""
        now = self.now

        def work() -> outbox.DueRows:
            with self.path.db.read_session() as session:
                return outbox.due_rows(session, now, limit)

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

    async def outbox_published_soon(self, items: Sequence[RelayItem], window: float) -> None:
        """After the broker's PUBACKs: the rows are marked sent, as `outbox_published_many`
        does, by the first write transaction of this process that starts within `window`
        seconds, or else by a transaction of their own. A transaction that starts first
        writes the marks before its own work: a command's response that came before its
        mark (already queued for the writer: with `window` 0 only such a one) is stored
        after its `CommandSent`, in the same transaction, instead of before it with no
        `CommandSent` at all. Returns once the marks are committed.

        Nothing is published in the meantime that could repeat them: the relay waits here
        before reading the outbox again. A crash before the marks are committed leaves the
        rows pending, as a crash between PUBACK and the mark always did: they are published
        again and the device deduplicates by `transaction_id` (DESIGN 9)."""
        if not items:
            return
        loop = asyncio.get_running_loop()
        written = asyncio.Event()

        def on_written() -> None:  # in the writer thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(written.set)

        batch = self.unmarked.add(items, on_written)
        try:
            if window > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(window):
                        await written.wait()
        finally:
            try:
                if not batch.written:  # no other transaction came: one of their own
                    await self.path.transact(_nothing)
            finally:
                self.unmarked.forget(batch)

    def _fold_marks(self, uow: UnitOfWork) -> Callable[[], None] | None:
        """The waiting `sent` marks, first in this transaction (see `fold_into_writes`)."""
        batches = self.unmarked.waiting()
        if not batches:
            return None
        with uow.locked():  # lock order: the write lock before any row lock
            self._published(uow, [item for b in batches for item in b.items])
        uow.flush()  # written before the transaction's own work reads or writes the rows

        def committed() -> None:
            for b in batches:
                b.written = True
                b.on_written()

        return committed

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


def _nothing(_uow: UnitOfWork) -> None:
    """A transaction with no work of its own (what is folded into it is the work)."""
