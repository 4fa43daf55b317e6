"""Refusing an inbound message: one log line with the reason, one stored row, one count.

Topics are always redacted (a registration topic carries a provisioning token). Log
lines are throttled so a flood of garbage cannot flood the log; the store and the
counters still see every message.
"""

from __future__ import annotations

import logging
import time

from backend.device_service import DeviceService
from backend.domain.topics import redact
from backend.mqtt.metrics import Metrics

log = logging.getLogger(__name__)


class LogThrottle:
    """At most `burst` lines per `window` seconds; then one summary of what was held back."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window_start >= self.window:
            if self._suppressed:
                log.warning("%d more rejected messages were not logged", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count <= self.burst:
            return True
        self._suppressed += 1
        return False


class Rejector:
    """Log (throttled), store in `rejected_messages` and count a refused message."""

    def __init__(
        self, devices: DeviceService, metrics: Metrics, throttle: LogThrottle | None = None
    ) -> None:
        self._devices = devices
        self._metrics = metrics
        self._throttle = throttle or LogThrottle()

    async def reject(self, topic: str, label: str, payload: bytes, reason: str) -> None:
        safe_topic = redact(topic)
        self._metrics.reject(label)
        if self._throttle.allow():
            log.warning("rejected %s message on %s: %s", label, safe_topic[:200], reason[:200])
        try:
            await self._devices.record_rejected(safe_topic, payload, reason)
        except Exception as exc:
            log.error("could not store a rejected message (%s)", exc.__class__.__name__)
