"""The relay's handover: outbox rows this process committed, published without reading
them back from the store when that provably keeps the order.

A commit hands its new rows to the relay (`CommittedEvents.outbox_items`). Reading them
back was most of the time between a committed command and its PUBLISH (issue 19: the
outbox read, a reader-thread hop and an ORM query, about 1.2 ms of a 12.6 ms round trip on
a quiet machine). The relay may skip that read only if nothing can be due before the
handed rows, so `Handover` keeps one fact: ``through``, an outbox id such that every row
up to it has been dealt with (published and marked, or expired) and no row after it was
pending when that was learnt. The handed rows are used only if their ids follow
``through`` without a gap: a row written in between by another process (the CLI), a
failed publish waiting for its retry time, or a drop (`drop_pending`) makes the relay
read the outbox as before. Any doubt costs a read, never the order.

Only with one writer of the outbox ids in order: SQLite (a single backend instance).
On PostgreSQL several instances interleave their rows and the relay always reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend.store.outbox import DueRows, RelayItem


class Handover:
    """Rows handed over by this process's commits, and what is known to be dealt with."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._handed: list[RelayItem] = []
        self._through: int | None = None
        self.used = 0
        """Drains that published handed-over rows without a read."""
        self.reads = 0
        """Drains that read the outbox."""

    def hand(self, items: Sequence[RelayItem]) -> None:
        """A commit of this process added these rows."""
        if self.enabled:
            self._handed.extend(items)

    def forget(self) -> None:
        """Something changed the outbox behind the relay's back (a drop, another drainer):
        the next drain reads."""
        self._handed.clear()
        self._through = None

    def take(self, limit: int) -> tuple[RelayItem, ...] | None:
        """The rows to publish without a read, oldest first; None: read the outbox.

        Whatever happens, what was known is given up until `handled` says the drain
        ended well (a failed publish or an error leaves the next drain reading)."""
        handed, self._handed = self._handed, []
        through, self._through = self._through, None
        if not handed or through is None or len(handed) > limit:
            if handed or through is not None:
                self.reads += 1
            return None
        handed.sort(key=lambda item: item.id)
        if any(item.id != through + n for n, item in enumerate(handed, 1)):
            self.reads += 1
            return None
        self.used += 1
        return tuple(handed)

    def handled(self, items: Sequence[RelayItem], read: DueRows | None) -> None:
        """The drain published (or expired) every one of ``items`` and wrote the marks.

        ``read``: what the outbox read said, if the drain read; None if the rows were
        handed over (sorted, following the old ``through``)."""
        if read is None:
            self._through = items[-1].id if items else None
        elif read.complete:
            self._through = read.last_id
