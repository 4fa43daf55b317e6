"""The receive side: classify each message, queue it on its bank's lane, apply it.

`on_message()` is what the connection calls for every message; it only reads the
topic and queues, so it stays fast however slow the store is. The lanes
(`Dispatcher`), the handlers and the two batchers (heartbeats, responses) live here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiomqtt

from backend.device_service import HeartbeatIn
from backend.domain.timeutil import truncate_ms
from backend.mqtt.acks import NO_ACK, Ack
from backend.mqtt.batcher import Batcher
from backend.mqtt.dispatcher import Dispatcher
from backend.mqtt.handlers import InboundHandlers
from backend.mqtt.heard import HeardFrom
from backend.mqtt.inbound import Inbound, classify
from backend.mqtt.known_banks import KnownBanks
from backend.mqtt.metrics import Metrics
from backend.mqtt.rejects import Rejector
from backend.service import LockerService
from backend.store.event_store import RecordedEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerOptions:
    """Tuning of the receive side."""

    heartbeat_linger: float = 0.1
    """While heartbeats keep coming, collect them this long (seconds) before one
    `record_heartbeats` call; the first one after a quiet spell is recorded at once."""
    response_linger: float = 0.0
    """Responses flush as soon as the store is free (batches form under load)."""
    max_batch: int = 500
    max_pending: int = 10_000
    """Received but unhandled messages beyond which the receive loop waits."""
    store_retries: int = 5


class Listener:
    """Everything between a received message and the store."""

    def __init__(
        self,
        service: LockerService,
        metrics: Metrics,
        options: ListenerOptions | None = None,
        *,
        on_outbox_work: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.options = options or ListenerOptions()
        devices = service.devices
        self.banks = KnownBanks(devices)
        self.heard = HeardFrom()
        self.heartbeats: Batcher[HeartbeatIn, None] = Batcher(
            "heartbeats",
            self._record_heartbeats,
            linger=self.options.heartbeat_linger,
            max_items=self.options.max_batch,
            metrics=metrics,
        )
        self.responses = Batcher(
            "responses",
            devices.record_responses,
            linger=self.options.response_linger,
            max_items=self.options.max_batch,
            metrics=metrics,
        )
        self.handlers = InboundHandlers(
            devices,
            metrics,
            Rejector(devices, metrics),
            self.banks,
            heartbeats=self.heartbeats,
            responses=self.responses,
            on_outbox_work=on_outbox_work,
            store_retries=self.options.store_retries,
        )
        self.dispatcher: Dispatcher[Inbound] = Dispatcher(
            self.handlers.handle_lane,
            max_pending=self.options.max_pending,
            max_group=self.options.max_batch,
            on_handled=_acknowledge,
        )

    async def on_message(self, message: aiomqtt.Message, ack: Ack = NO_ACK) -> None:
        """Queue a received message on its lane; `ack` is called once it is finished
        (stored, refused and stored as rejected, or given up after the store retries)."""
        item = classify(
            message,
            truncate_ms(self.service.clock.now()),
            accept_legacy_status=self.service.settings.mqtt_accept_legacy_status,
            ack=ack,
        )
        self.metrics.messages[item.label] += 1
        self.heard.observe(item)
        await self.dispatcher.put(item.lane, item)

    def observe(self, events: list[RecordedEvent]) -> None:
        """Service listener: learn banks created in this process."""
        self.banks.observe(events)

    async def _record_heartbeats(self, items: Sequence[HeartbeatIn]) -> list[None]:
        taken = await self.service.devices.record_heartbeats(items)
        self.metrics.heartbeats_taken += taken
        self.metrics.heartbeats_ignored += len(items) - taken
        return [None] * len(items)

    def start(self) -> None:
        self.heartbeats.start()
        self.responses.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """Handle what was already received, then stop the batchers. (Acknowledgements
        of a connection that has closed are not sent: the broker sends those again.)"""
        try:
            await self.dispatcher.drain(timeout)
        except TimeoutError:
            log.warning("%d received messages not handled at stop", self.dispatcher.pending)
            await self.dispatcher.abort()
        await self.heartbeats.stop()
        await self.responses.stop()
        self.handlers.flush_logs()

    async def abort(self) -> None:
        """Drop everything in flight, unacknowledged (for crash tests)."""
        await self.dispatcher.abort()
        self.heartbeats.abort()
        self.responses.abort()


def _acknowledge(items: list[Inbound]) -> None:
    for item in items:
        item.ack()
