"""The recent heartbeats of every bank, in memory (heartbeats are not events).

Per bank a ring of the last `keep` heartbeats taken as life: when each arrived and how
late (arrival minus the device's own timestamp). Compact, since one backend holds 20,000
banks (DESIGN 15): 4 bytes a heartbeat, ~2.9 KB a bank at 720, as two IEEE half floats:

* the arrival, as the gap since the previous arrival *as stored*, so rounding never adds
  up: every stored arrival is within half a unit in the last place of its own gap of the
  true one (2 ms for a 5 s heartbeat, 16 ms after a minute of silence, 1 s after an hour);
* the lag, to about three significant digits (1 ms near 1 s, clamped at +-65,504 s).

A gap the format cannot hold (over 18 hours) starts the ring anew. Lost on restart, and
each backend instance knows only the heartbeats it received itself.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from backend.views import HeartbeatSample

DEFAULT_KEEP = 720  # one hour at a 5 s heartbeat
HALF_MAX = 65_504.0  # the largest finite half float
_PAIR = struct.Struct("<ee")  # (gap since the previous arrival, lag)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _half(value: float) -> float:
    return max(-HALF_MAX, min(HALF_MAX, value))


class _Ring:
    """`keep` (gap, lag) pairs; `oldest` is the absolute arrival of the oldest one kept and
    `newest` that of the newest, both as reconstructed from what is stored."""

    __slots__ = ("count", "data", "keep", "newest", "next", "oldest")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.data = bytearray(_PAIR.size * keep)
        self.next = 0
        self.count = 0
        self.oldest = 0.0
        self.newest = 0.0

    def add(self, arrived: float, lag: float) -> None:
        gap = arrived - self.newest
        if self.count == 0 or abs(gap) > HALF_MAX:
            self.count = self.next = 0
            self.oldest = self.newest = arrived
            gap = 0.0
        offset = self.next * _PAIR.size
        if self.count == self.keep:  # overwrite the oldest: the next one becomes the oldest
            self.oldest += _PAIR.unpack_from(self.data, (offset + _PAIR.size) % len(self.data))[0]
        else:
            self.count += 1
        _PAIR.pack_into(self.data, offset, gap, _half(lag))
        self.newest += _PAIR.unpack_from(self.data, offset)[0]
        if self.count == 1:  # the only one kept (keep 1) is also the oldest
            self.oldest = self.newest
        self.next = (self.next + 1) % self.keep

    def samples(self) -> list[tuple[float, float]]:
        """(arrival, lag) oldest first."""
        start = (self.next - self.count) % self.keep
        pairs = list(_PAIR.iter_unpack(self.data))
        ordered = (pairs[start:] + pairs[:start])[: self.count]
        found: list[tuple[float, float]] = []
        at = self.oldest
        for index, (gap, lag) in enumerate(ordered):
            if index:
                at += gap
            found.append((at, lag))
        return found


class HeartbeatHistory:
    """The last `keep` heartbeats of each bank (0 keeps none)."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self.keep = max(0, keep)
        self._rings: dict[str, _Ring] = {}

    def record(self, bank_uuid: str, received_at: datetime, sent_at: datetime) -> None:
        """One heartbeat taken as life: when it arrived and the device's timestamp in it."""
        if not self.keep:
            return
        ring = self._rings.get(bank_uuid)
        if ring is None:
            ring = self._rings[bank_uuid] = _Ring(self.keep)
        ring.add(received_at.timestamp(), (received_at - sent_at).total_seconds())

    def samples(self, bank_uuid: str, since: datetime | None = None) -> list[HeartbeatSample]:
        """The bank's heartbeats, oldest first (those arrived after `since` when given)."""
        ring = self._rings.get(bank_uuid)
        if ring is None:
            return []
        floor = since.timestamp() if since is not None else float("-inf")
        return [
            HeartbeatSample(
                received_at=_EPOCH + timedelta(seconds=round(arrived, 3)),
                lag_seconds=round(lag, 3),
            )
            for arrived, lag in ring.samples()
            if arrived > floor
        ]

    def forget(self, bank_uuid: str) -> None:
        self._rings.pop(bank_uuid, None)
