"""Refusing an inbound message: one log line with the reason, one stored row, one count.

Topics are always redacted (a registration topic carries a provisioning token). Log
lines are throttled (`LogThrottle`, also used for other per-message warnings) so a flood
of garbage cannot flood the log; the store and the counters still see every message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from backend.device_service import DeviceService
from backend.domain.topics import redact
from backend.mqtt.metrics import Metrics

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


class Rejector:
    """Log (throttled), store in `rejected_messages` and count a refused message."""

    def __init__(
        self, devices: DeviceService, metrics: Metrics, throttle: LogThrottle | None = None
    ) -> None:
        self._devices = devices
        self._metrics = metrics
        self._throttle = throttle or LogThrottle("rejected messages")
        self._store_errors = LogThrottle("rejected messages not stored")

    async def reject(self, topic: str, label: str, payload: bytes, reason: str) -> None:
        safe_topic = redact(topic)
        self._metrics.reject(label)
        if self._throttle.allow():
            log.warning("rejected %s message on %s: %s", label, safe_topic[:200], reason[:200])
        try:
            await self._devices.record_rejected(safe_topic, payload, reason)
        except Exception as exc:
            if self._store_errors.allow():
                log.error("could not store a rejected message (%s)", exc.__class__.__name__)

    def flush_log(self) -> None:
        """Report what the throttles held back (at shutdown)."""
        self._throttle.flush()
        self._store_errors.flush()
