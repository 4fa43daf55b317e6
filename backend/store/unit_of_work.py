"""One write transaction over any number of banks: load, decide, append, project, enqueue.

Aggregates are cached between transactions and caught up from the store before
use, so a bank is never replayed from scratch on the hot path while writes from
other processes (the CLI, another instance) are still seen. The cache is only
touched by the single writer thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from sqlmodel import Session

from backend.domain.bank import LockerBank
from backend.domain.events import DomainEvent, EventMetadata
from backend.domain.messages import OutboundMessage
from backend.store import event_store, outbox
from backend.store.event_store import RecordedEvent
from backend.store.projections import project
from backend.store.tables import OutboxRow

P = ParamSpec("P")
R = TypeVar("R")
Decide = Callable[[LockerBank], list[DomainEvent]]
React = Callable[[LockerBank, list[DomainEvent]], list[OutboundMessage]]


class AggregateCache:
    """Banks as of the last position this process has seen, keyed by uuid.

    Only the single writer thread touches it, and only while holding the store's write
    lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: the append advisory lock), so after
    `sync` the cached banks are exactly the committed state and no per-bank version
    query is needed before an append.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._banks: dict[str, LockerBank] = {}
        self._limit = limit
        self.position = 0

    def sync(self, session: Session) -> int:
        """Catch up on what other processes appended since we last looked; returns the
        newest stored position."""
        newest = event_store.last_position(session)
        while self.position < newest:
            batch = event_store.read_after(session, self.position, 2000)
            if not batch:
                break
            for recorded in batch:
                bank = self._banks.get(recorded.aggregate_uuid)
                if bank is not None:
                    if recorded.aggregate_version == bank.version + 1:
                        bank.apply(recorded.event)
                    elif recorded.aggregate_version > bank.version:
                        self.forget(recorded.aggregate_uuid)  # reload in full when needed
            self.position = batch[-1].position
        self.position = max(self.position, newest)
        return newest

    def __contains__(self, uuid: str) -> bool:
        return uuid in self._banks

    def get(self, session: Session, uuid: str) -> LockerBank:
        bank = self._banks.get(uuid)
        if bank is None:
            if len(self._banks) >= self._limit:
                self._banks.clear()
            bank = self._banks[uuid] = LockerBank(uuid)
            for recorded in event_store.load(session, uuid):
                bank.apply(recorded.event)
        return bank

    def forget(self, uuid: str) -> None:
        self._banks.pop(uuid, None)

    def clear(self) -> None:
        self._banks.clear()
        self.position = 0


class CommittedEvents(list[RecordedEvent]):
    """The events of one commit, as the service's listeners get them, and the outbox rows
    that commit added (the relay looks at the outbox again only when there are some, and
    may publish them as handed over here without reading them back), and whether it took
    pending rows out of the outbox (`drop_pending`)."""

    def __init__(
        self,
        events: list[RecordedEvent],
        outbox_items: tuple[outbox.RelayItem, ...] = (),
        *,
        outbox_dropped: bool = False,
    ) -> None:
        super().__init__(events)
        self.outbox_items = outbox_items
        self.outbox_dropped = outbox_dropped

    @property
    def outbox_rows(self) -> int:
        """How many outbox rows the commit added."""
        return len(self.outbox_items)


@dataclass
class UnitOfWork:
    """One write transaction. Decisions apply their events to the cached banks at once (so
    a later decision in the same transaction sees them); if the transaction fails, every
    bank it touched is dropped from the cache and reloaded from the store next time."""

    session: Session
    cache: AggregateCache
    now: datetime
    recorded: list[RecordedEvent] = field(default_factory=list)
    queued: list[OutboxRow] = field(default_factory=list)
    """Outbox rows this transaction added."""
    outbox_dropped: bool = False
    """This transaction took pending rows out of the outbox (they must not go out)."""
    _touched: set[str] = field(default_factory=set)
    _locked: bool = False
    _position_before: int = 0
    _next_position: int = 0
    _pending_events: list[event_store.EventRow] = field(default_factory=list)

    def bank(self, uuid: str) -> LockerBank:
        """The bank as of this transaction (including events it already recorded). Reading a
        bank takes the write lock (as `locked()` does): a decision must see the committed
        state. Code that needs the lock without a bank says so with `locked()`."""
        self._lock()
        if self._pending_events and uuid not in self.cache:
            self._write_events()  # the bank is loaded from the store: it must see them
        return self.cache.get(self.session, uuid)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Work that reads rows another instance may change, under the write lock.

        Why: on PostgreSQL several instances write to one database. A row read before the
        lock (a command's tracker row, a dedup key, an alert) may be changed and committed
        by another instance a moment later; deciding on it answers a duplicate as a first
        answer, or applies a device event twice. Taking the lock first makes instances
        queue up and catches the aggregate cache up, so what is read next is the committed
        state. It is also the lock order: the write lock before any row lock (a row lock
        taken first and the write lock after deadlocks two instances). SQLite holds the
        lock from BEGIN IMMEDIATE, so SQLite tests stay green without it: do not drop it.

        The lock is a transaction lock: it is held until the transaction ends, not only for
        the block; the block marks the code that depends on it. Taking it again is a no-op.
        """
        self._lock()
        yield

    @contextmanager
    def preloaded(
        self,
        load: Callable[Concatenate[Session, P], list[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Iterator[list[R]]:
        """Rows a batch will touch, loaded in a few set-based SELECTs and kept alive for
        the block (see `batch_reads`).

        Why: the session's identity map holds unchanged rows weakly. The per-item
        `Session.get` calls that follow are answered from memory only while something holds
        the loaded rows; this block holds them, so no line that looks unused keeps a batch
        from falling back to one SELECT per item. Loading requires the write lock (taken
        with `locked()` before): rows read before it may be stale on PostgreSQL with several
        instances.
        """
        if not self._locked:
            raise RuntimeError("preload under the write lock: take uow.locked() first")
        rows = load(self.session, *args, **kwargs)
        try:
            yield rows
        finally:
            del rows

    def _lock(self) -> None:
        """Take the write lock (PostgreSQL; SQLite holds it from BEGIN IMMEDIATE) and catch up,
        so concurrent instances queue up instead of deciding on stale state."""
        if not self._locked:
            event_store.lock_appends(self.session)
            self._position_before = self.cache.position
            self._next_position = self.cache.sync(self.session) + 1
            self._locked = True

    def execute(
        self,
        uuid: str,
        decide: Decide,
        metadata: EventMetadata,
        react: React | None = None,
        *,
        projected_by_caller: bool = False,
    ) -> list[RecordedEvent]:
        """Run a decision on a bank and record its events, projections and messages.
        `projected_by_caller`: the caller writes the read models for these events itself
        (set-wise, `answers.save`); the ORM projectors are not run."""
        bank = self.bank(uuid)
        events = decide(bank)
        if not events:
            return []
        self._touched.add(uuid)
        recorded = event_store.append(
            self.session,
            uuid,
            bank.version,
            events,
            metadata,
            verify=False,
            first_position=self._next_position,
            pending=self._pending_events,
        )
        self._next_position += len(recorded)
        for event in events:
            bank.apply(event)
        if not projected_by_caller:
            for r in recorded:
                project(self.session, r)
        if react is not None:
            for message in react(bank, events):
                self.enqueue(message)
        self.cache.position = max(self.cache.position, recorded[-1].position)
        self.recorded.extend(recorded)
        return recorded

    def enqueue(self, message: OutboundMessage) -> None:
        self.queued.append(outbox.enqueue(self.session, message, self.now))

    def flush(self) -> None:
        """Write what is pending: the batched event rows, then the read models."""
        self._write_events()
        self.session.flush()

    def _write_events(self) -> None:
        event_store.write_rows(self.session, self._pending_events)
        self._pending_events.clear()

    def committed(self) -> None:
        """Nothing to do: the cache already holds this transaction's events."""

    def failed(self) -> None:
        for uuid in self._touched:
            self.cache.forget(uuid)
        if self._locked:
            self.cache.position = self._position_before
