"""The MQTT runtime that `--headless` and the standalone console start.

`MqttRuntime(service)` wires the connection (reconnect loop, birth, will), the
listener (lanes, handlers, batchers), the outbox relay and the sweeper, and runs
them as tasks:

    async with MqttRuntime(service) as runtime:
        await runtime.state.wait_for(True, timeout=10)
        ...

`state` (ConnectionState) and `metrics` (Metrics) are what the console, /healthz and
/metrics read. `stop()` is the clean shutdown (relay and sweeper stop, the offline
status is published, the connection closes, what was received is handled); `abort()`
drops everything at once, as a crash would, for tests of recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt

from backend.lifecycle import StartStop
from backend.mqtt.acks import Ack
from backend.mqtt.backoff import Backoff
from backend.mqtt.connection import MqttConnection
from backend.mqtt.listener import Listener, ListenerOptions
from backend.mqtt.metrics import Metrics
from backend.mqtt.presence import Presence
from backend.mqtt.relay import OutboxRelay, RelayOptions
from backend.mqtt.state import ConnectionState
from backend.mqtt.sweeper import Sweeper, SweeperOptions
from backend.service import LockerService
from backend.store.event_store import RecordedEvent
from backend.task_stop import cancel_and_wait

log = logging.getLogger(__name__)
STOP_DRAIN = 2.0
"""At a clean stop, seconds to finish received messages before the connection closes."""


@dataclass(frozen=True)
class RuntimeOptions:
    """Intervals and limits; the defaults suit production, tests shorten them."""

    listener: ListenerOptions = field(default_factory=ListenerOptions)
    relay: RelayOptions = field(default_factory=RelayOptions)
    sweeper: SweeperOptions = field(default_factory=SweeperOptions)
    reconnect_initial: float = 0.1
    reconnect_max: float = 10.0
    keepalive: int = 30
    mqtt_timeout: float = 10.0
    stop_timeout: float = 10.0
    status_refresh: float = 15.0
    """Seconds between re-publishes of `server/status/{instance}` (its timestamp)."""
    catch_up_timeout: float = 30.0
    """After a (re)connect, sweeps wait at most this long for the backlog to be handled."""


class MqttRuntime(StartStop):
    """Connection + listener + relay + sweeper for one LockerService."""

    def __init__(self, service: LockerService, options: RuntimeOptions | None = None) -> None:
        self.service = service
        self.options = options or RuntimeOptions()
        self.metrics = Metrics()
        self.state = ConnectionState()
        self.listener = Listener(
            service, self.metrics, self.options.listener, on_outbox_work=self.wake_relay
        )
        self.connection = MqttConnection(
            service.settings,
            self._on_message,
            state=self.state,
            metrics=self.metrics,
            backoff=Backoff(self.options.reconnect_initial, self.options.reconnect_max),
            keepalive=self.options.keepalive,
            timeout=self.options.mqtt_timeout,
            on_connected=lambda: self.presence.connected(),
            on_disconnected=lambda: self.presence.disconnected(),
        )
        self.presence = Presence(
            service.settings,
            self.connection,
            service.clock,
            drained=self.listener.dispatcher.drain,
            refresh=self.options.status_refresh,
            catch_up_timeout=self.options.catch_up_timeout,
        )
        self.connection.subscriptions += self.presence.filters()
        self.relay = OutboxRelay(service, self.connection, self.metrics, self.options.relay)
        self.sweeper = Sweeper(
            service,
            self.metrics,
            self.options.sweeper,
            on_outbox_work=self.relay.wake,
            heard=self._heard_at,
            ready=self.presence.caught_up.is_set,
            backlog=self.connection.probe.backlog,
        )
        self._connection_task: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._listening = False

    # ----- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._connection_task is not None

    async def start(self) -> None:
        """Start every part; returns at once (await `state.wait_for(True)` to know more)."""
        if self.running:
            return
        if not self._listening:
            self.service.subscribe(self._on_events)
            self._listening = True
        self.listener.start()
        self._connection_task = self._spawn(self.connection.run(), "mqtt-connection")
        self._workers = [
            self._spawn(self.relay.run(), "outbox-relay"),
            self._spawn(self.sweeper.run(), "sweeper"),
        ]

    async def stop(self) -> None:
        """Clean shutdown: nothing received is dropped, devices see the offline status."""
        if not self.running:
            return
        await _cancel(self._workers)
        if self.state.connected:
            # Finish what was received while the connection lasts, so that its PUBACKs
            # reach the broker (what is finished after the close is sent to us again).
            with contextlib.suppress(TimeoutError):
                await self.listener.dispatcher.drain(min(STOP_DRAIN, self.options.stop_timeout))
            await self.presence.goodbye()
            await self.connection.say_goodbye()
        else:
            await self.presence.close()
        await _cancel([self._connection_task] if self._connection_task else [])
        self._connection_task = None
        self._workers = []
        await self.listener.stop(self.options.stop_timeout)
        self.state.set_disconnected("stopped")
        log.info("MQTT runtime stopped")

    async def abort(self) -> None:
        """Stop at once, like a crash for the store: no offline status, received messages
        dropped unacknowledged (the broker sends them again to the next connection of
        this session; with the embedded amqtt broker they were acknowledged on receipt and
        are lost), nothing flushed. Store calls already running in a worker thread
        still finish, and aiomqtt still closes the socket with a DISCONNECT (so the broker
        keeps our will to itself); a real crash is tested with a SIGKILLed process."""
        tasks = [*self._workers, *([self._connection_task] if self._connection_task else [])]
        self._connection_task = None
        self._workers = []
        await self.listener.abort()
        await _cancel(tasks)
        await self.presence.close()
        self.state.set_disconnected("aborted")

    # ----- wiring ------------------------------------------------------------------------

    def wake_relay(self) -> None:
        self.relay.wake()

    async def _on_message(self, message: aiomqtt.Message, ack: Ack) -> None:
        topic = message.topic.value
        if self.presence.handles(topic):
            payload = message.payload
            self.presence.on_message(topic, payload if isinstance(payload, bytes) else b"")
            ack()
            return
        await self.listener.on_message(message, ack)

    def _heard_at(self, bank_uuid: str) -> datetime | None:
        """When the sweeper may last count a bank as heard: its newest heartbeat received
        here, but never before this instance caught up after its last (re)connect. The
        backend's own absence is not the fleet's silence: every bank gets 3 heartbeat
        intervals from then (DESIGN 9, 16)."""
        at = self.listener.heard.get(bank_uuid)
        since = self.presence.caught_up_at
        if since is None:
            return at
        return since if at is None or at < since else at

    def _on_events(self, events: list[RecordedEvent]) -> None:
        if not self.running:
            return
        self.listener.observe(events)
        self.relay.on_events(events)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        return task

    # ----- what the console and /healthz read --------------------------------------------

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self.state.wait_for(True, timeout)

    async def health(self) -> dict[str, Any]:
        """Connection state, outbox depth, lanes in flight."""
        return {
            "mqtt": self.state.as_dict(),
            "outbox_depth": await self.service.devices.outbox_depth(),
            "inbound_pending": self.listener.dispatcher.pending,
        }


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    await cancel_and_wait(tasks)  # again until they end: aiomqtt can swallow a cancel


def _report_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("MQTT runtime task %s died", task.get_name(), exc_info=exc)
