"""One simulated locker bank controller: an aiomqtt client that follows the contract.

Lifecycle (DESIGN sections 3, 6, 9, 10):

1. Without credentials it connects as the provisioning client with its
   persisted random client id (persistent session, so a reply is not lost if
   the device dies meanwhile), subscribes to its reply topic and publishes
   `{"client_id"}` to `locker/register/{token}`, re-sending until answered.
2. With credentials (persisted at once) it connects as the bank
   (username = bank uuid, client id = bank uuid, `clean_session=False`) with
   its last will, subscribes to its command topic (QoS 1) and publishes a
   retained heartbeat at once and then every interval.
3. Commands go through `CommandHandler` (dedup, expiry, in-flight marks);
   responses are sent QoS 1; door sensor changes become `door_state_changed`
   events, sent in order through a small outbox that survives reconnects.
4. Connection lost: reconnect with backoff; the broker's session delivers
   what was queued meanwhile.

Tests await conditions instead of sleeping: `wait_for(predicate, timeout)`
wakes on every change of the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from backend.domain import topics
from backend.domain.contract import (
    CommandResponse,
    ContractError,
    DeviceEvent,
    ProvisioningReply,
    ServerStatus,
    parse,
)
from backend.domain.timeutil import Clock, SystemClock
from simulator.commands import CommandHandler, Outcome, SimulatedCrash
from simulator.connection import SOCKET_OPTIONS, abort_connection
from simulator.faults import CrashPoint, FaultDice, Faults
from simulator.hardware import DoorState, Hardware
from simulator.openlocker import reply_problem
from simulator.state import AppliedConfig, DeviceState, StateStore
from simulator.wire import DeviceTopics, Wire

log = logging.getLogger("simulator.device")

DEFAULT_PROVISIONING_USER = "provisioning_client"
FOREIGN_TOPICS_KEPT = 100


def granted_code(granted: int | ReasonCode) -> int:
    """A SUBACK entry as a number: MQTT 3.1.1 gives granted QoS ints, paho's v2 callbacks
    ReasonCode objects (.value); 0x80 and above is a refusal."""
    return int(granted.value) if isinstance(granted, ReasonCode) else int(granted)


class DeviceStatus(StrEnum):
    """Where a device is in its life."""

    STOPPED = "stopped"
    PROVISIONING = "provisioning"
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    CRASHED = "crashed"
    REJECTED = "rejected"
    """Provisioning was refused; the device waits for `reprovision(token)`."""
    FAILED = "failed"
    """An unexpected error ended the device (see `last_error`)."""


class ProvisioningRejected(Exception):
    """The backend answered the registration with an error."""


@dataclass(frozen=True)
class DeviceOptions:
    """How a simulated device behaves when nothing goes wrong.

    heartbeat_interval: seconds between heartbeats until `apply_config` sets one.
    compartments: compartments 1..N exist until `apply_config` sets the mapping.
    door_dwell_seconds: a user closes an opened door after this long (None: never).
    upstream: the `openlocker` dialect, as the real upstream client speaks it (its
        payloads, split state topics, no events, no stored-answer replay, no expiry).
    legacy_status: send responses on the deprecated `locker/{u}/status`.
    durable: fsync the state file on every save.
    provisioning_timeout: re-send the registration after this long without a reply.
    """

    heartbeat_interval: float = 5.0
    compartments: int = 12
    door_dwell_seconds: float | None = 5.0
    upstream: bool = False
    legacy_status: bool = False
    keepalive: int = 30
    durable: bool = True
    provisioning_timeout: float = 10.0
    reconnect_min_seconds: float = 0.2
    reconnect_max_seconds: float = 10.0
    mqtt_timeout: float = 10.0
    watch_server_status: bool = True
    history_limit: int = 10_000
    """How many sent responses and events a device keeps for inspection."""
    pinned_client_id: bool = False
    """After provisioning connect with the client id it registered with (its pinned id, as
    the upstream client does) instead of its UUID. Mosquitto's dynsec plugin (AUTH_MODE=
    dynsec) admits exactly one client id per account: the pinned one."""


@dataclass(frozen=True)
class DeviceConfig:
    """Identity and connection of one device. `token` is needed only until provisioned."""

    name: str
    broker_host: str
    broker_port: int
    state_dir: Path
    token: str | None = None
    provisioning_user: str = DEFAULT_PROVISIONING_USER
    provisioning_password: str | None = None
    seed: int | str = 0
    options: DeviceOptions = field(default_factory=DeviceOptions)


@dataclass
class DeviceStats:
    """Counters of what a device did (duplicates included)."""

    heartbeats_sent: int = 0
    responses_sent: int = 0
    events_sent: int = 0
    commands_received: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_failures: int = 0
    connection_losses: int = 0
    injected_drops: int = 0
    crashes: int = 0
    provisioning_attempts: int = 0
    foreign_messages: int = 0


def device_name_for_token(token: str) -> str:
    """A stable, non-secret device name for a provisioning token."""
    return "dev-" + hashlib.sha256(token.encode()).hexdigest()[:16]


class SimulatedDevice:
    """A locker bank's IoT client: start, stop, crash, restart, and observe it."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        faults: Faults | None = None,
        clock: Clock | None = None,
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.config = config
        self.options = config.options
        self.faults = faults or Faults()
        self.name = config.name
        self._base_clock: Clock = clock or SystemClock()
        self._gate = connect_gate
        self.dice = FaultDice(f"{config.seed}:{config.name}")
        self._jitter = random.Random(f"jitter:{config.seed}:{config.name}")
        self.hardware = Hardware(
            range(1, self.options.compartments + 1), dwell_seconds=self.options.door_dwell_seconds
        )
        self.store = StateStore(config.state_dir, durable=self.options.durable)
        self.wire = Wire(self.now, upstream=self.options.upstream)
        self.token = config.token
        self.state: DeviceState | None = None
        self.handler: CommandHandler | None = None
        self.status = DeviceStatus.STOPPED
        self.stats = DeviceStats()
        self.responses_sent: deque[CommandResponse] = deque(maxlen=self.options.history_limit)
        self.events_sent: deque[DeviceEvent] = deque(maxlen=self.options.history_limit)
        self.last_error: str | None = None
        self.provisioning_error: str | None = None
        self.server_online: bool | None = None
        self.foreign_topics: deque[str] = deque(maxlen=FOREIGN_TOPICS_KEPT)
        self.provisioned = asyncio.Event()
        self.online = asyncio.Event()
        self._change = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._armed_crash: CrashPoint | None = None
        self._outbox: deque[tuple[str, bytes, bool, bool]] = deque()
        self._outbox_ready = asyncio.Event()
        self._interval_changed = asyncio.Event()
        self._started_at = 0.0
        self._restart_handle: asyncio.TimerHandle | None = None
        self._restart_task: asyncio.Task[None] | None = None

    # --- observation --------------------------------------------------------------------

    def now(self) -> datetime:
        """The device's clock: the base clock plus the injected skew."""
        return self._base_clock.now() + timedelta(seconds=self.faults.clock_skew_seconds)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def executed(self) -> dict[str, int]:
        """Hardware actions per transaction id (kept by the hardware, across crashes)."""
        return self.hardware.executed

    @property
    def door_states(self) -> dict[int, DoorState]:
        return self.hardware.doors

    @property
    def bank_uuid(self) -> str | None:
        creds = self.state.credentials if self.state else None
        return creds.mqtt_user if creds else None

    @property
    def topics(self) -> DeviceTopics | None:
        uuid = self.bank_uuid
        if uuid is None:
            return None
        return DeviceTopics.for_bank(
            uuid, upstream=self.options.upstream, legacy_status=self.options.legacy_status
        )

    @property
    def heartbeat_interval(self) -> float:
        if self.state is not None and self.state.config is not None:
            return float(self.state.config.heartbeat_interval_seconds)
        return self.options.heartbeat_interval

    @property
    def applied_config(self) -> AppliedConfig | None:
        return self.state.config if self.state else None

    def responses_for(self, transaction_id: str) -> list[CommandResponse]:
        return [r for r in self.responses_sent if r.transaction_id == transaction_id]

    async def wait_for(self, predicate: Callable[[SimulatedDevice], bool], timeout: float) -> None:
        """Return once `predicate(device)` holds; TimeoutError after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    await self._change.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{self.name}: condition not met within {timeout} s "
                f"(status {self.status}, last error {self.last_error})"
            ) from None

    async def next_change(self) -> None:
        """Return at the device's next observable change (status, message sent, door...)."""
        await self._change.wait()

    async def wait_until_online(self, timeout: float) -> None:
        await self.wait_for(lambda d: d.online.is_set(), timeout)

    async def wait_until_provisioned(self, timeout: float) -> None:
        await self.wait_for(lambda d: d.provisioned.is_set(), timeout)

    def _notify(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    def _set_status(self, status: DeviceStatus) -> None:
        if status != self.status:
            self.status = status
            self._notify()

    # --- control ------------------------------------------------------------------------

    async def start(self) -> None:
        """Boot: load the persisted state (raises StateError if unreadable) and run."""
        if self.running:
            return
        self._cancel_restart()
        self.state = self.store.load()
        if self.state.credentials is None and self.token is None:
            raise ValueError(f"{self.name}: no credentials in {self.store.path} and no token")
        if self.state.config is not None:
            self.hardware.configure(c.id for c in self.state.config.compartments)
        self.handler = CommandHandler(
            store=self.store,
            state=self.state,
            hardware=self.hardware,
            dice=self.dice,
            faults=lambda: self.faults,
            clock=self.now,
            wire=self.wire,
            next_crash=self._next_crash,
            on_config=self._on_config,
        )
        if self.state.credentials is not None:
            self.provisioned.set()
        else:
            self.provisioned.clear()
        self._outbox.clear()
        self._started_at = asyncio.get_running_loop().time()
        self.hardware.attach(self._on_door)
        self._task = asyncio.create_task(self._run(), name=f"sim-device-{self.name}")
        self._notify()

    async def stop(self) -> None:
        """Shut down cleanly: DISCONNECT (no last will), then stop."""
        self._cancel_restart()
        await self._end(DeviceStatus.STOPPED, abrupt=False)

    async def crash(self) -> None:
        """Die on the spot: the TCP connection is cut without DISCONNECT (the broker
        publishes the last will) and everything not yet persisted is lost."""
        self._cancel_restart()
        if self.running:
            self.stats.crashes += 1
        await self._end(DeviceStatus.CRASHED, abrupt=True)

    async def restart(self, *, crash: bool = False) -> None:
        """Stop (or crash) and boot again from the persisted state."""
        if crash:
            await self.crash()
        else:
            await self.stop()
        await self.start()

    def drop_connection(self) -> bool:
        """Lose the network abruptly (last will fires); the device keeps running and reconnects."""
        client = self._client
        if client is None:
            return False
        self.stats.injected_drops += 1
        return abort_connection(client)

    def arm_crash(self, point: CrashPoint) -> None:
        """Crash at `point` while executing the next command that reaches execution."""
        self._armed_crash = point

    async def reprovision(self, token: str) -> None:
        """Forget the credentials and provision again with a new token."""
        await self.stop()
        state = self.store.load()
        state.credentials = None
        self.store.save(state)
        self.token = token
        self.provisioning_error = None
        await self.start()

    def close_door(self, compartment: int) -> None:
        """A user closes a door now (sends `door_state_changed` closed)."""
        self.hardware.close_door(compartment)

    def scan_qr(self, qr_payload: str, scanner: str = "locker") -> None:
        """A QR code is scanned at the locker: queue a `qr_scanned` event."""
        device_topics = self.topics
        if device_topics is None:
            raise RuntimeError(f"{self.name}: not provisioned")
        if self.options.upstream:
            raise RuntimeError(f"{self.name}: the upstream client sends no qr_scanned events")
        self._enqueue(device_topics.event, self.wire.qr_event(qr_payload, scanner), event=True)

    async def publish_raw(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish anything over the device's own connection (hostile tests)."""
        client = self._require_client()
        await _publish(client, topic, payload, qos=qos, retain=retain)

    async def subscribe_raw(self, topic_filter: str, *, qos: int = 1) -> list[int]:
        """Subscribe over the device's connection; the granted QoS codes (128 = refused)."""
        client = self._require_client()
        granted = await client.subscribe(topic_filter, qos=qos)
        return [granted_code(g) for g in granted]

    def _require_client(self) -> aiomqtt.Client:
        if self._client is None or not self.online.is_set():
            raise RuntimeError(f"{self.name}: not online")
        return self._client

    async def _end(self, status: DeviceStatus, *, abrupt: bool) -> None:
        task = self._task
        if task is not None and not task.done():
            if abrupt and self._client is not None:
                abort_connection(self._client)
            await cancel_and_wait([task])
        self._after_run(status)

    def _after_run(self, status: DeviceStatus) -> None:
        self.hardware.attach(None)
        self._client = None
        self._outbox.clear()
        self.online.clear()
        self._set_status(status)
        self._notify()

    def _cancel_restart(self) -> None:
        if self._restart_handle is not None:
            self._restart_handle.cancel()
            self._restart_handle = None

    def shutdown_hardware(self) -> None:
        """Stop the simulated users (pending door closings); call when the simulation ends."""
        self.hardware.shutdown()

    # --- main loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.options.reconnect_min_seconds
        while True:
            was_online = False
            try:
                assert self.state is not None
                if self.state.credentials is None:
                    self._set_status(DeviceStatus.PROVISIONING)
                    await self._provision()
                self._set_status(
                    DeviceStatus.CONNECTING
                    if self.stats.connects == 0
                    else DeviceStatus.RECONNECTING
                )
                connects = self.stats.connects
                try:
                    await self._session()
                finally:
                    was_online = self.stats.connects > connects
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or type(exc).__name__
                if was_online:
                    self.stats.connection_losses += 1
                else:
                    self.stats.connect_failures += 1
                log.debug("%s: connection ended: %s", self.name, self.last_error)
            except ProvisioningRejected as exc:
                self.provisioning_error = str(exc)
                self.last_error = str(exc)
                self._after_run(DeviceStatus.REJECTED)
                return
            except SimulatedCrash as crash:
                self.stats.crashes += 1
                self.last_error = str(crash)
                log.info("%s: %s", self.name, crash)
                self._after_run(DeviceStatus.CRASHED)
                self._schedule_restart()
                return
            except Exception as exc:  # a bug or a broken disk: say so, do not limp on
                log.exception("%s: device failed", self.name)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._after_run(DeviceStatus.FAILED)
                return
            self._client = None
            self.online.clear()
            self._set_status(DeviceStatus.RECONNECTING)
            if was_online:
                backoff = self.options.reconnect_min_seconds
            await asyncio.sleep(backoff * self._jitter.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.options.reconnect_max_seconds)

    def _schedule_restart(self) -> None:
        delay = self.faults.restart_after_crash_seconds
        if delay is None:
            return
        loop = asyncio.get_running_loop()
        self._restart_handle = loop.call_later(delay, self._begin_restart)

    def _begin_restart(self) -> None:
        self._restart_task = asyncio.get_running_loop().create_task(self._restart_after_crash())

    async def _restart_after_crash(self) -> None:
        self._restart_handle = None
        try:
            await self.start()
        except Exception as exc:  # a broken state file: stay down and say why
            self.last_error = f"restart failed: {exc}"
            log.error("%s: %s", self.name, self.last_error)
            self._notify()

    @contextlib.asynccontextmanager
    async def _connected(self, client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
        """Connect (through the fleet's connect gate) and disconnect on exit."""
        async with contextlib.AsyncExitStack() as stack:
            self._client = client  # visible at once, so a crash can cut a half-open connection
            try:
                if self._gate is not None:
                    async with self._gate:
                        await stack.enter_async_context(client)
                else:
                    await stack.enter_async_context(client)
            except BaseException:
                abort_connection(client)  # no half-open socket left behind (refused, cancelled)
                self._client = None
                raise
            try:
                yield client
            finally:
                self._client = None

    async def _provision(self) -> None:
        assert self.state is not None
        token = self.token
        if token is None:
            raise ProvisioningRejected("no provisioning token")
        client_id = self.state.client_id
        reply_topic = topics.reply_topic(client_id)
        client = aiomqtt.Client(
            self.config.broker_host,
            self.config.broker_port,
            username=self.config.provisioning_user,
            password=self.config.provisioning_password,
            identifier=client_id,
            clean_session=False,
            keepalive=self.options.keepalive,
            timeout=self.options.mqtt_timeout,
            socket_options=SOCKET_OPTIONS,
        )
        async with self._connected(client):
            await client.subscribe(reply_topic, qos=1)
            while True:
                await _publish(client, topics.register_topic(token), self.wire.register(client_id))
                self.stats.provisioning_attempts += 1
                reply = await self._await_reply(client, reply_topic)
                if reply is None:
                    continue
                if reply.status == "success" and reply.data is not None:
                    self.state.credentials = reply.data
                    self.store.save(self.state)
                    self.provisioned.set()
                    self._notify()
                    log.info("%s: provisioned as %s", self.name, reply.data.mqtt_user)
                    return
                raise ProvisioningRejected(reply.message or "provisioning refused")

    async def _await_reply(
        self, client: aiomqtt.Client, reply_topic: str
    ) -> ProvisioningReply | None:
        """The first valid reply on our topic, or None after the provisioning timeout."""
        try:
            async with asyncio.timeout(self.options.provisioning_timeout):
                async for message in client.messages:
                    if message.topic.value != reply_topic:
                        continue
                    raw = _payload_bytes(message.payload)
                    if self.options.upstream and (problem := reply_problem(raw)):
                        # the upstream client gives up here (its token is used up)
                        raise ProvisioningRejected(problem)
                    try:
                        return parse(ProvisioningReply, raw)
                    except ContractError as exc:
                        log.warning("%s: bad provisioning reply: %s", self.name, exc)
        except TimeoutError:
            return None
        return None

    async def _session(self) -> None:
        device_topics = self.topics
        assert self.state is not None and self.state.credentials is not None
        assert device_topics is not None
        creds = self.state.credentials
        client = aiomqtt.Client(
            self.config.broker_host,
            self.config.broker_port,
            username=creds.mqtt_user,
            password=creds.mqtt_password,
            identifier=self.state.client_id if self.options.pinned_client_id else creds.mqtt_user,
            clean_session=False,
            keepalive=self.options.keepalive,
            timeout=self.options.mqtt_timeout,
            socket_options=SOCKET_OPTIONS,
            will=aiomqtt.Will(device_topics.will, self.wire.last_will(), qos=1, retain=False),
        )
        async with self._connected(client):
            granted = await client.subscribe(device_topics.command, qos=1)
            if any(granted_code(g) >= 0x80 for g in granted):
                raise aiomqtt.MqttError(f"subscription to {device_topics.command} refused")
            if self.options.watch_server_status:
                await client.subscribe(topics.SERVER_STATUS, qos=1)
            self.stats.connects += 1
            await self._publish_heartbeat(client, device_topics)
            if device_topics.snapshot is not None:
                self._enqueue(device_topics.snapshot, self.wire.snapshot(self.hardware.doors))
            self.online.set()
            self.last_error = None
            self._set_status(DeviceStatus.ONLINE)
            helpers = [
                asyncio.create_task(self._heartbeat_loop(client, device_topics)),
                asyncio.create_task(self._pump(client)),
            ]
            drop_in = self.dice.next_connection_drop(self.faults)
            if drop_in is not None:
                helpers.append(asyncio.create_task(self._drop_later(client, drop_in)))
            try:
                async for message in client.messages:
                    await self._on_message(client, device_topics, message)
            finally:
                self.online.clear()
                await cancel_and_wait(helpers)

    # --- inbound ------------------------------------------------------------------------

    async def _on_message(
        self, client: aiomqtt.Client, device_topics: DeviceTopics, message: aiomqtt.Message
    ) -> None:
        topic = message.topic.value
        payload = _payload_bytes(message.payload)
        if topic == device_topics.command:
            await self._on_command(client, device_topics, payload)
        elif topic == topics.SERVER_STATUS:
            with contextlib.suppress(ContractError):
                self.server_online = parse(ServerStatus, payload).status == "online"
                self._notify()
        else:
            self.stats.foreign_messages += 1
            self.foreign_topics.append(topic)
            self._notify()

    async def _on_command(
        self, client: aiomqtt.Client, device_topics: DeviceTopics, payload: bytes
    ) -> None:
        assert self.handler is not None
        self.stats.commands_received += 1
        try:
            outcome = self.handler.handle(payload)
        except SimulatedCrash:
            abort_connection(client)  # before anything else: no DISCONNECT, the will fires
            raise
        self.stats.outcomes[outcome.kind] += 1
        self._notify()
        if outcome.payload is None or not outcome.send:
            return
        delay = self.dice.latency(self.faults)
        if delay > 0:
            await asyncio.sleep(delay)
        await self._send_response(client, device_topics, outcome)

    async def _send_response(
        self, client: aiomqtt.Client, device_topics: DeviceTopics, outcome: Outcome
    ) -> None:
        assert outcome.payload is not None
        response = parse(CommandResponse, outcome.payload)
        for _ in range(self.dice.copies(self.faults)):
            await _publish(client, device_topics.response, outcome.payload)
            self.stats.responses_sent += 1
            self.responses_sent.append(response)
            self._notify()

    def _next_crash(self) -> CrashPoint | None:
        armed, self._armed_crash = self._armed_crash, None
        return armed or self.dice.crash(self.faults)

    def _on_config(self, config: AppliedConfig) -> None:
        self._interval_changed.set()

    # --- outbound -----------------------------------------------------------------------

    def _on_door(self, compartment: int, state: DoorState) -> None:
        device_topics = self.topics
        if device_topics is None:
            return
        if device_topics.snapshot is None:
            self._enqueue(device_topics.event, self.wire.door_event(compartment, state), event=True)
        else:  # the upstream client reports doors only in its retained snapshot
            self._enqueue(device_topics.snapshot, self.wire.snapshot(self.hardware.doors))
        self._notify()

    def _enqueue(self, topic: str, payload: bytes, *, event: bool = False) -> None:
        """Queue an event (or, upstream, a retained snapshot) for the in-order outbox."""
        self._outbox.append((topic, payload, not event, event))
        self._outbox_ready.set()

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Publish the outbox in order; an item leaves it only after the broker's PUBACK."""
        while True:
            while self._outbox:
                topic, payload, retain, is_event = self._outbox[0]
                copies = self.dice.copies(self.faults) if is_event else 1
                for _ in range(copies):
                    await _publish(client, topic, payload, retain=retain)
                    if is_event:
                        self.stats.events_sent += 1
                        self.events_sent.append(parse(DeviceEvent, payload))
                self._outbox.popleft()
                self._notify()
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    async def _publish_heartbeat(self, client: aiomqtt.Client, device_topics: DeviceTopics) -> None:
        uptime = asyncio.get_running_loop().time() - self._started_at
        # the seed retains heartbeats; the upstream client publishes them with retain=false
        retain = not self.options.upstream
        await _publish(client, device_topics.heartbeat, self.wire.heartbeat(uptime), retain=retain)
        self.stats.heartbeats_sent += 1
        self._notify()

    async def _heartbeat_loop(self, client: aiomqtt.Client, device_topics: DeviceTopics) -> None:
        """Heartbeats every interval, phase-shifted per device so a fleet does not beat in step."""
        loop = asyncio.get_running_loop()
        interval = self.heartbeat_interval
        next_at = loop.time() + interval * self._jitter.uniform(0.5, 1.0)
        while True:
            if self.heartbeat_interval != interval:
                # a new interval (apply_config): the next beat comes one new interval from now
                interval = self.heartbeat_interval
                next_at = loop.time() + interval
            delay = next_at - loop.time()
            if delay > 0:
                self._interval_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._interval_changed.wait()
                continue
            await self._publish_heartbeat(client, device_topics)
            next_at = max(next_at + interval, loop.time() + interval / 2)

    async def _drop_later(self, client: aiomqtt.Client, delay: float) -> None:
        await asyncio.sleep(delay)
        self.stats.injected_drops += 1
        log.info("%s: injected connection drop", self.name)
        abort_connection(client)


async def _publish(
    client: aiomqtt.Client, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
) -> None:
    """Publish and wait for the PUBACK, without losing a cancellation on the way.

    On Python 3.11, `asyncio.wait_for` (which aiomqtt uses to await the PUBACK)
    swallows a cancellation that arrives in the same loop iteration as the
    PUBACK; the task would then run on as if never cancelled.
    """
    await client.publish(topic, payload, qos=qos, retain=retain)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: list[asyncio.Task[None]], repeat_every: float = 0.5) -> None:
    """Cancel tasks and wait until they are done, cancelling again if one swallowed it."""
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=repeat_every)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
