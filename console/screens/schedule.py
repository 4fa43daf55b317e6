"""When a screen fetches again: as soon as something happened (the event log moved), at
least every `period` seconds otherwise (heartbeats leave no event), and never so often
that fetching takes more than `duty` of the time (a fleet of thousands is slow to read).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RefreshSchedule:
    """Decides whether a refresh is due; told when one starts and when it ends."""

    def __init__(
        self,
        *,
        period: float = 1.0,
        duty: float = 0.25,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period = period
        self.duty = duty
        self._monotonic = monotonic
        self._started_at: float | None = None
        self._position: int | None = None
        self._duration = 0.0

    def due(self, position: int, *, force: bool = False) -> bool:
        """True when a fetch should start now, given the event log's current position."""
        if self._started_at is None:
            return True
        since = self._monotonic() - self._started_at
        if since < self._duration / self.duty:
            return False
        return force or position != self._position or since >= self.period

    def started(self, position: int) -> None:
        self._started_at = self._monotonic()
        self._position = position

    def finished(self) -> None:
        if self._started_at is not None:
            self._duration = self._monotonic() - self._started_at
