"""One write transaction over any number of banks: load, decide, append, project, enqueue.

Aggregates are cached between transactions and caught up from the store before
use, so a bank is never replayed from scratch on the hot path while writes from
other processes (the CLI, another instance) are still seen. The cache is only
touched by the single writer thread.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from backend.domain.bank import LockerBank
from backend.domain.events import DomainEvent, EventMetadata
from backend.domain.messages import OutboundMessage
from backend.store import event_store, outbox
from backend.store.event_store import RecordedEvent
from backend.store.projections import project

Decide = Callable[[LockerBank], list[DomainEvent]]
React = Callable[[LockerBank, list[DomainEvent]], list[OutboundMessage]]


class AggregateCache:
    """Banks as of their last committed version, keyed by uuid (writer thread only)."""

    def __init__(self, limit: int = 50_000) -> None:
        self._banks: dict[str, LockerBank] = {}
        self._limit = limit

    def get(self, session: Session, uuid: str) -> LockerBank:
        bank = self._banks.get(uuid)
        if bank is None:
            if len(self._banks) >= self._limit:
                self._banks.clear()
            bank = self._banks[uuid] = LockerBank(uuid)
        for recorded in event_store.load(session, uuid, after_version=bank.version):
            bank.apply(recorded.event)
        return bank

    def peek(self, uuid: str) -> LockerBank:
        """The cached bank without catching up (it was loaded earlier in this transaction)."""
        return self._banks[uuid]

    def forget(self, uuid: str) -> None:
        self._banks.pop(uuid, None)

    def clear(self) -> None:
        self._banks.clear()


@dataclass
class UnitOfWork:
    """Collects the effects of one transaction; applied to the cache only after commit."""

    session: Session
    cache: AggregateCache
    now: datetime
    recorded: list[RecordedEvent] = field(default_factory=list)
    _pending: list[tuple[LockerBank, list[DomainEvent]]] = field(default_factory=list)
    _versions: dict[str, int] = field(default_factory=dict)
    _locked: bool = False

    def bank(self, uuid: str) -> LockerBank:
        """The bank as of this transaction (including events it already recorded)."""
        if uuid in self._versions:
            bank = self.cache.peek(uuid)
            return _replay(bank, [e for b, es in self._pending if b is bank for e in es])
        self._lock()
        return self.cache.get(self.session, uuid)

    def _lock(self) -> None:
        """Serialize writers before reading aggregate state (PostgreSQL), so that concurrent
        instances queue up instead of deciding on stale state and conflicting."""
        if not self._locked:
            event_store.lock_appends(self.session)
            self._locked = True

    def execute(
        self,
        uuid: str,
        decide: Decide,
        metadata: EventMetadata,
        react: React | None = None,
    ) -> list[RecordedEvent]:
        """Run a decision on a bank and record its events, projections and messages."""
        if uuid in self._versions:
            # Touched before in this transaction: the cache must not catch up on our own
            # uncommitted rows; decide on the cached state plus our pending events.
            bank = self.cache.peek(uuid)
            view = _replay(bank, [e for b, es in self._pending if b is bank for e in es])
            expected = self._versions[uuid]
        else:
            self._lock()
            bank = view = self.cache.get(self.session, uuid)
            expected = bank.version
        events = decide(view)
        if not events:
            return []
        recorded = event_store.append(self.session, uuid, expected, events, metadata)
        for r in recorded:
            project(self.session, r)
        if react is not None:
            for message in react(view, events):
                outbox.enqueue(self.session, message, self.now)
        self._versions[uuid] = expected + len(events)
        self._pending.append((bank, events))
        self.recorded.extend(recorded)
        return recorded

    def enqueue(self, message: OutboundMessage) -> None:
        outbox.enqueue(self.session, message, self.now)

    def committed(self) -> None:
        for bank, events in self._pending:
            for event in events:
                bank.apply(event)

    def failed(self) -> None:
        for bank, _ in self._pending:
            self.cache.forget(bank.uuid)


def _replay(bank: LockerBank, events: list[DomainEvent]) -> LockerBank:
    if not events:
        return bank
    view = copy.deepcopy(bank)
    for event in events:
        view.apply(event)
    return view
