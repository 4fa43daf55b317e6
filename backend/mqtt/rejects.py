"""Refusing an inbound message: one log line with the reason, one stored row, one count.

Topics are always redacted (a registration topic carries a provisioning token). Log
lines are throttled (`LogThrottle`, also used for other per-message warnings) so a flood
of garbage cannot flood the log; the store and the counters still see every message.
"""

from __future__ import annotations

import logging

from backend.device_service import DeviceService
from backend.log_throttle import LogThrottle
from backend.mqtt.metrics import Metrics
from backend.redaction import redact

log = logging.getLogger(__name__)


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
