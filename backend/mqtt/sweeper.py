"""Periodic housekeeping: liveness, command timeouts, expiry, re-asks; pruning.

`devices.sweep()` sets silent banks offline (no heartbeat for 3 x interval), times
out and expires commands, and re-queues unanswered commands after
COMMAND_RETRY_AFTER; `prune()` drops old dedup keys and rejected messages, rarely.
While `ready()` is false (the runtime is not connected, or has not yet handled what the
broker queued for it during its absence, `backend.mqtt.presence`) sweeps leave liveness
and sent commands alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from backend.device_service import HeardAt
from backend.mqtt.backoff import Backoff
from backend.mqtt.metrics import Metrics
from backend.service import LockerService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweeperOptions:
    sweep_interval: float = 0.5
    prune_interval: float = 3600.0


class Sweeper:
    """Runs the sweeps; tells the relay when a sweep queued re-asks."""

    def __init__(
        self,
        service: LockerService,
        metrics: Metrics,
        options: SweeperOptions | None = None,
        *,
        on_outbox_work: Callable[[], None] = lambda: None,
        heard: HeardAt | None = None,
        ready: Callable[[], bool] = lambda: True,
        backlog: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.devices = service.devices
        self._heard = heard
        self._ready = ready
        self._backlog = backlog
        self.metrics = metrics
        self.options = options or SweeperOptions()
        self._on_outbox_work = on_outbox_work
        self._backoff = Backoff(self.options.sweep_interval, 30.0)
        self.sweeps = 0
        self.recovered = False

    async def recover(self) -> dict[str, int]:
        """Once at start: ask again what may have been answered while we were away."""
        counts = await self.devices.recover_after_restart()
        if counts["reasked"] or counts["in_doubt"]:
            log.info(
                "after the restart: %d unanswered commands asked again, %d in doubt",
                counts["reasked"],
                counts["in_doubt"],
            )
        self.metrics.commands["reasked"] += counts["reasked"]
        if counts["reasked"]:
            self._on_outbox_work()
        self.recovered = True
        return counts

    async def run(self) -> None:
        next_prune = time.monotonic() + self.options.prune_interval
        while not self.recovered:
            try:
                await self.recover()
            except Exception as exc:  # CancelledError is not one: it ends the loop
                await asyncio.sleep(self._failed("recovery", exc))
        while True:
            delay = self.options.sweep_interval
            try:
                await self.sweep_once()
                if time.monotonic() >= next_prune:
                    await self.devices.prune()
                    next_prune = time.monotonic() + self.options.prune_interval
                self._backoff.reset()
            except Exception as exc:  # CancelledError is not one: it ends the loop
                delay = self._failed("sweep", exc)
            await asyncio.sleep(delay)

    def _failed(self, what: str, exc: Exception) -> float:
        """Log a failed round (by exception class only) and answer the backoff delay."""
        delay = self._backoff.next()
        log.warning("%s failed (%s); next in %.1f s", what, exc.__class__.__name__, delay)
        return delay

    async def sweep_once(self) -> dict[str, int]:
        # Not ready: not connected, or the broker is still handing us what the fleet sent
        # while we were away. Silence now is ours, not the fleet's; answers may be queued.
        # Behind by `backlog` seconds (the self-probe's round trip): heartbeats sent within
        # that time may still be queued for us, so silence is judged that much earlier.
        counts = await self.devices.sweep(
            self._heard, settled=self._ready(), backlog=timedelta(seconds=self._backlog())
        )
        self.sweeps += 1
        self.metrics.banks_offline += counts.get("offline", 0)
        for key in ("timeout", "expired", "reasked"):
            if counts.get(key):
                self.metrics.commands[key] += counts[key]
        if counts.get("reasked"):
            self._on_outbox_work()
        return counts
