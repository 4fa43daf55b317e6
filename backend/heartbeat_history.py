"""The recent heartbeats of every bank, in memory (heartbeats are not events).

Per bank a ring of the last `keep` heartbeats taken as life: when each arrived and how
late (arrival minus the device's own timestamp). Compact: two float32 arrays per bank
(8 bytes a heartbeat, ~5.8 KB a bank at 720), times relative to a per-bank base that
moves forward once a day so float32 keeps millisecond precision. Lost on restart, and
each backend instance knows only the heartbeats it received itself.
"""

from __future__ import annotations

from array import array
from datetime import UTC, datetime, timedelta

from backend.views import HeartbeatSample

DEFAULT_KEEP = 720  # one hour at a 5 s heartbeat
REBASE_AFTER = 86_400.0


class _Ring:
    __slots__ = ("arrived", "base", "full", "lag", "next")

    def __init__(self, base: float, keep: int) -> None:
        self.base = base
        self.arrived = array("f", bytes(4 * keep))
        self.lag = array("f", bytes(4 * keep))
        self.next = 0
        self.full = False

    def add(self, arrived: float, lag: float) -> None:
        offset = arrived - self.base
        if offset > REBASE_AFTER:
            shift = offset
            self.base += shift
            for index in range(len(self.arrived)):
                self.arrived[index] -= shift
            offset = 0.0
        self.arrived[self.next] = offset
        self.lag[self.next] = lag
        self.next = (self.next + 1) % len(self.arrived)
        self.full = self.full or self.next == 0

    def samples(self) -> list[tuple[float, float]]:
        keep = len(self.arrived)
        order = range(self.next, self.next + keep) if self.full else range(self.next)
        return [(self.base + self.arrived[i % keep], self.lag[i % keep]) for i in order]


class HeartbeatHistory:
    """The last `keep` heartbeats of each bank (0 keeps none)."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self.keep = max(0, keep)
        self._rings: dict[str, _Ring] = {}

    def record(self, bank_uuid: str, received_at: datetime, sent_at: datetime) -> None:
        """One heartbeat taken as life: when it arrived and the device's timestamp in it."""
        if not self.keep:
            return
        arrived = received_at.timestamp()
        ring = self._rings.get(bank_uuid)
        if ring is None:
            ring = self._rings[bank_uuid] = _Ring(arrived, self.keep)
        ring.add(arrived, (received_at - sent_at).total_seconds())

    def samples(self, bank_uuid: str, since: datetime | None = None) -> list[HeartbeatSample]:
        """The bank's heartbeats, oldest first (those arrived after `since` when given)."""
        ring = self._rings.get(bank_uuid)
        if ring is None:
            return []
        floor = since.timestamp() if since is not None else float("-inf")
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return [
            HeartbeatSample(
                received_at=epoch + timedelta(seconds=round(arrived, 3)),
                lag_seconds=round(lag, 3),
            )
            for arrived, lag in ring.samples()
            if arrived > floor
        ]

    def forget(self, bank_uuid: str) -> None:
        self._rings.pop(bank_uuid, None)
