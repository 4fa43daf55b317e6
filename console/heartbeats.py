"""Heartbeat history as the console has observed it (the read model keeps only the last one).

Each refresh feeds the banks in; a changed `last_heartbeat_at` is a new pulse. The
sparkline plots the gaps between pulses plus the silence since the last one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from itertools import pairwise

from backend.domain.timeutil import ensure_utc
from backend.views import BankView

KEEP = 12


class HeartbeatHistory:
    """Recent heartbeat times per bank uuid."""

    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        self._seen: dict[str, deque[datetime]] = {}

    def observe(self, banks: Iterable[BankView]) -> None:
        """Record each bank's latest heartbeat if it is newer than the last one seen."""
        for bank in banks:
            if bank.last_heartbeat_at is None:
                continue
            seen = self._seen.setdefault(bank.uuid, deque(maxlen=self._keep))
            at = ensure_utc(bank.last_heartbeat_at)
            if not seen or at > seen[-1]:
                seen.append(at)

    def gaps(self, uuid: str, now: datetime) -> list[float]:
        """Seconds between successive pulses, then the silence until `now`."""
        seen = self._seen.get(uuid)
        if not seen:
            return []
        times = list(seen)
        out = [(b - a).total_seconds() for a, b in pairwise(times)]
        out.append(max(0.0, (ensure_utc(now) - times[-1]).total_seconds()))
        return out

    def pulses(self, now: datetime) -> Pulses:
        """`gaps` of every bank as of `now`, computed only for the banks asked about."""
        return Pulses(self, now)


class Pulses(Mapping[str, list[float]]):
    """A lazy uuid -> gaps mapping (a fleet table asks only for the rows it redraws)."""

    def __init__(self, history: HeartbeatHistory, now: datetime) -> None:
        self._history = history
        self._now = now

    def __getitem__(self, uuid: str) -> list[float]:
        if uuid not in self._history._seen:
            raise KeyError(uuid)
        return self._history.gaps(uuid, self._now)

    def __iter__(self) -> Iterator[str]:
        return iter(self._history._seen)

    def __len__(self) -> int:
        return len(self._history._seen)
