"""Throttled logging for per-message and per-request warnings: a flood of bad input (MQTT
messages, HTTP requests) costs a bounded number of log lines, and what was held back is
reported as a count."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

LOG_BURST = 20
"""Lines of one kind logged per window before the rest are only counted."""
LOG_WINDOW = 10.0
"""Seconds per window."""


class LogThrottle:
    """At most `burst` lines of one kind per `window` seconds; the rest are counted and
    reported in one summary line, "suppressed N similar log lines (what) ...", when the
    next window opens or at `flush()` (shutdown). A flood therefore costs at most
    `burst + 1` lines per window, however many messages it carries."""

    def __init__(
        self,
        what: str,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.burst = burst
        self.window = window
        self._log = logger or log
        self._clock = clock
        self._window_start = -float("inf")
        self._count = 0
        self._suppressed = 0
        self.suppressed_total = 0

    def allow(self) -> bool:
        """True if this line may be logged; False if it is only counted."""
        now = self._clock()
        if now - self._window_start >= self.window:
            self.flush()
            self._window_start, self._count = now, 0
        self._count += 1
        if self._count <= self.burst:
            return True
        self._suppressed += 1
        return False

    def flush(self) -> None:
        """Log the summary of what is held back now, if anything."""
        if not self._suppressed:
            return
        seconds = max(0.0, self._clock() - self._window_start)
        self._log.warning(
            "suppressed %d similar log lines (%s) in the last %.0f s",
            self._suppressed,
            self.what,
            seconds,
        )
        self.suppressed_total += self._suppressed
        self._suppressed = 0
