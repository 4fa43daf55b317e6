"""A sliding-window failure counter per key (provisioning attempts per client id)."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta


class FailureLimiter:
    """Allows at most `limit` failures per key within `window`; pure, times passed in."""

    def __init__(self, limit: int = 5, window: timedelta = timedelta(minutes=1)) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[datetime]] = {}

    def _trim(self, key: str, now: datetime) -> deque[datetime]:
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        return failures

    def blocked(self, key: str, now: datetime) -> bool:
        """True when `key` has used up its failures for the current window."""
        blocked = len(self._trim(key, now)) >= self.limit
        if not self._failures.get(key):
            self._failures.pop(key, None)
        return blocked

    def forgive(self, key: str) -> None:
        """Take back the latest failure of `key` (one counted ahead of the outcome)."""
        failures = self._failures.get(key)
        if failures:
            failures.pop()

    def failed(self, key: str, now: datetime) -> None:
        self._trim(key, now).append(now)
        if len(self._failures) > 100_000:  # bound memory under a flood of random client ids
            oldest = next(iter(self._failures))
            self._failures.pop(oldest, None)
