"""The device simulator against a real Mosquitto, with a test-side fake backend.

`FakeBackend` is a test peer, not the product: raw aiomqtt standing in for
the backend's MQTT runtime (being written elsewhere). It answers
registrations with credentials, publishes commands, records everything a
device sends and checks every such message against the contract models; any
violation fails the test at teardown. Nothing here sleeps to wait: tests
await conditions with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from backend.domain import topics
from backend.domain.contract import (
    INVALID_TOKEN_MESSAGE,
    CommandResponse,
    CompartmentMapping,
    CompartmentsSnapshot,
    ConnectionLost,
    ContractError,
    DeviceEvent,
    Heartbeat,
    RegisterRequest,
    config_hash,
    parse,
    parse_heartbeat,
    parse_state,
)
from backend.domain.timeutil import iso
from simulator import DeviceConfig, DeviceOptions, DeviceStatus, Faults, SimulatedDevice
from simulator.cli import run_simulator
from simulator.fleet import Fleet
from simulator.hostile import (
    MALFORMED_PAYLOADS,
    send_malformed,
    send_oversized,
    spoof_other_bank,
)
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.mosquitto

T = 10.0  # generous timeout for any single awaited condition
PROVISIONING_USER = "provisioning_client"
PROVISIONING_PASSWORD = "prov-secret"


# --- the fake backend (test peer) ---------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    model: Any = None


@dataclass
class FakeBackend:
    """Raw-aiomqtt stand-in for the backend: provisioning replies, commands, contract checks."""

    host: str
    port: int
    auto_reply: bool = True
    strict: bool = True
    upstream: bool = False
    banks: dict[str, str] = field(default_factory=dict)  # token -> bank uuid
    passwords: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None
    _change: asyncio.Event = field(default_factory=asyncio.Event)

    def add_bank(self) -> tuple[str, str]:
        token = secrets.token_urlsafe(32)
        bank = str(uuid.uuid4())
        self.banks[token] = bank
        self.passwords[bank] = secrets.token_urlsafe(16)
        return token, bank

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBackend]:
        async with aiomqtt.Client(self.host, self.port, identifier="fake-backend") as client:
            self._client = client
            await client.subscribe("locker/#", qos=1)
            await client.subscribe("test/#", qos=1)
            self._task = asyncio.create_task(self._listen(client))
            try:
                yield self
            finally:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _listen(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away (restart test)
            await self._consume(client)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            item = Received(message.topic.value, message.payload, bool(message.retain))
            item.model = self._check(item)
            self.received.append(item)
            if item.topic.startswith(topics.REGISTER_PREFIX) and self.auto_reply:
                await self.reply(item)
            event, self._change = self._change, asyncio.Event()
            event.set()

    def _check(self, item: Received) -> Any:
        """Parse a device message with its contract model; record violations."""
        topic = item.topic
        if topic.startswith(("locker/provisioning/", "test/")) or topic.endswith("/command"):
            return None  # our own messages
        try:
            if topic.startswith(topics.REGISTER_PREFIX):
                model: Any = parse(RegisterRequest, item.payload)
            else:
                kind = topics.parse_inbound(topic).kind
                if kind in (topics.TopicKind.RESPONSE, topics.TopicKind.LEGACY_STATUS):
                    model = parse(CommandResponse, item.payload)
                elif kind == topics.TopicKind.EVENT:
                    model = parse(DeviceEvent, item.payload)
                    if model.event == "door_state_changed":
                        model.door_data()
                    else:
                        model.qr_data()
                elif kind == topics.TopicKind.STATE:
                    model = parse_state(item.payload)
                    if self.upstream:
                        self.violations.append(f"{topic}: upstream device used the plain state")
                elif kind == topics.TopicKind.STATE_HEARTBEAT:
                    model = parse_heartbeat(item.payload)
                elif kind == topics.TopicKind.STATE_COMPARTMENTS:
                    model = parse(CompartmentsSnapshot, item.payload)
                else:
                    model = parse(ConnectionLost, item.payload)
            if self.upstream and getattr(model, "message_id", None) is None:
                self.violations.append(f"{topic}: no message_id in upstream form")
            return model
        except (ContractError, topics.TopicError, ValueError) as exc:
            if self.strict:
                self.violations.append(f"{topic}: {exc}")
            return None

    async def reply(self, item: Received) -> None:
        assert self._client is not None
        token = item.topic[len(topics.REGISTER_PREFIX) :]
        request = parse(RegisterRequest, item.payload)
        bank = self.banks.get(token)
        envelope = {"message_id": str(uuid.uuid4()), "timestamp": iso(datetime.now(UTC))}
        if bank is None:
            body: dict[str, Any] = {
                **envelope,
                "status": "error",
                "message": INVALID_TOKEN_MESSAGE,
            }
        else:
            body = {
                **envelope,
                "status": "success",
                "data": {"mqtt_user": bank, "mqtt_password": self.passwords[bank]},
            }
        await self._client.publish(
            topics.reply_topic(request.client_id), json.dumps(body).encode(), qos=1
        )

    async def send_command(
        self,
        bank: str,
        action: str = "open_compartment",
        data: dict[str, Any] | None = None,
        *,
        transaction_id: str | None = None,
        expires_in: float = 60.0,
        copies: int = 1,
    ) -> str:
        assert self._client is not None
        tx = transaction_id or f"tx-{uuid.uuid4()}"
        now = datetime.now(UTC)
        payload = json.dumps(
            {
                **({"message_id": str(uuid.uuid4())} if self.upstream else {}),
                "action": action,
                "transaction_id": tx,
                "timestamp": iso(now),
                "expires_at": iso(now + timedelta(seconds=expires_in)),
                "data": data if data is not None else {"compartment_number": 1},
            }
        ).encode()
        for _ in range(copies):
            await self._client.publish(topics.command_topic(bank), payload, qos=1)
        return tx

    async def publish(self, topic: str, payload: bytes) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = T) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._change.wait()

    # views
    def on(self, bank: str, suffix: str) -> list[Received]:
        topic = topics.device_topic(bank, suffix)
        return [r for r in self.received if r.topic == topic]

    def responses(self, bank: str, tx: str | None = None) -> list[CommandResponse]:
        found = [r.model for r in self.on(bank, "response") if r.model is not None]
        return [m for m in found if tx is None or m.transaction_id == tx]

    def events(self, bank: str) -> list[DeviceEvent]:
        return [r.model for r in self.on(bank, "event") if r.model is not None]

    def heartbeats(self, bank: str, suffix: str = "state") -> list[Received]:
        return [r for r in self.on(bank, suffix) if isinstance(r.model, Heartbeat)]

    def wills(self, bank: str, suffix: str = "state") -> list[Received]:
        return [r for r in self.on(bank, suffix) if isinstance(r.model, ConnectionLost)]

    def registrations(self) -> list[Received]:
        return [r for r in self.received if r.topic.startswith(topics.REGISTER_PREFIX)]


@pytest.fixture
async def backend(mosquitto: MosquittoBroker) -> AsyncIterator[FakeBackend]:
    fake = FakeBackend(mosquitto.host, mosquitto.port)
    async with fake.running():
        yield fake
    assert fake.violations == [], "device messages that break the contract"


OPTIONS = DeviceOptions(
    heartbeat_interval=0.2,
    door_dwell_seconds=0.1,
    provisioning_timeout=2.0,
    reconnect_min_seconds=0.05,
    reconnect_max_seconds=0.5,
    keepalive=10,
    mqtt_timeout=5.0,
)


def make_device(
    broker: MosquittoBroker,
    state_root: Path,
    token: str | None,
    *,
    name: str = "dev-1",
    faults: Faults | None = None,
    options: DeviceOptions = OPTIONS,
) -> SimulatedDevice:
    config = DeviceConfig(
        name=name,
        broker_host=broker.host,
        broker_port=broker.port,
        state_dir=state_root / name,
        token=token,
        provisioning_user=PROVISIONING_USER,
        provisioning_password=PROVISIONING_PASSWORD,
        seed=7,
        options=options,
    )
    return SimulatedDevice(config, faults=faults)


@contextlib.asynccontextmanager
async def online_device(
    broker: MosquittoBroker,
    backend: FakeBackend,
    state_root: Path,
    *,
    faults: Faults | None = None,
    options: DeviceOptions = OPTIONS,
    name: str = "dev-1",
) -> AsyncIterator[tuple[SimulatedDevice, str]]:
    token, bank = backend.add_bank()
    device = make_device(broker, state_root, token, faults=faults, options=options, name=name)
    await device.start()
    try:
        await device.wait_until_online(T)
        yield device, bank
    finally:
        await device.stop()
        device.shutdown_hardware()


async def retained(broker: MosquittoBroker, topic: str) -> Any:
    """The retained message on `topic`, parsed, as a late subscriber sees it."""
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(topic, qos=1)
        async with asyncio.timeout(T):
            message = await anext(aiter(late.messages))
    assert message.retain and isinstance(message.payload, bytes)
    if topic.endswith("/state"):
        return parse_state(message.payload)
    if topic.endswith("/compartments"):
        return parse(CompartmentsSnapshot, message.payload)
    return parse(Heartbeat, message.payload)


# --- provisioning, heartbeats -------------------------------------------------------------


async def test_provisioning_then_bank_session_with_retained_heartbeat(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    token, bank = backend.add_bank()
    device = make_device(mosquitto, tmp_path, token)
    await device.start()
    await device.wait_until_online(T)
    try:
        assert device.bank_uuid == bank
        (register,) = backend.registrations()
        assert register.topic == topics.register_topic(token)
        assert register.model.client_id == device.state.client_id  # type: ignore[union-attr]  # a registration was received
        saved = json.loads((tmp_path / "dev-1" / "state.json").read_text())
        assert saved["credentials"]["mqtt_user"] == bank
        await backend.wait_for(lambda: len(backend.heartbeats(bank)) >= 2)

        # a late subscriber gets the last heartbeat as a retained message
        assert isinstance(await retained(mosquitto, topics.device_topic(bank, "state")), Heartbeat)

        # credentials persisted: a restart connects as the bank without registering again
        await device.restart()
        await device.wait_until_online(T)
        assert len(backend.registrations()) == 1
        assert device.stats.connects == 2
    finally:
        await device.stop()


async def test_rejected_token_stops_provisioning(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    device = make_device(mosquitto, tmp_path, "not-a-known-token")
    await device.start()
    await device.wait_for(lambda d: d.status == DeviceStatus.REJECTED, T)
    assert device.provisioning_error == INVALID_TOKEN_MESSAGE
    assert not device.provisioned.is_set()


async def test_provisioning_reply_survives_a_crash_while_waiting(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    backend.auto_reply = False
    token, bank = backend.add_bank()
    device = make_device(mosquitto, tmp_path, token)
    await device.start()
    await backend.wait_for(lambda: len(backend.registrations()) == 1)
    await device.crash()
    # the backend answers while the device is down; its persistent session keeps the reply
    await backend.reply(backend.registrations()[0])
    await device.start()
    await device.wait_until_online(T)
    assert device.bank_uuid == bank


# --- commands -----------------------------------------------------------------------------


async def test_open_executes_once_and_reports_door_open_then_closed(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        tx = await backend.send_command(bank, data={"compartment_number": 3})
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        (response,) = backend.responses(bank, tx)
        assert response.result == "success" and response.action == "open_compartment"
        assert device.executed == {tx: 1}
        await backend.wait_for(lambda: len(backend.events(bank)) >= 2)
        opened, closed = backend.events(bank)[:2]
        assert (opened.event, opened.door_data().compartment_number) == ("door_state_changed", 3)
        assert [opened.door_data().state, closed.door_data().state] == ["open", "closed"]
        assert opened.event_id and closed.event_id and opened.event_id != closed.event_id
        assert closed.timestamp - opened.timestamp >= timedelta(seconds=0.09)
        assert device.door_states[3] == "closed"


async def test_same_command_three_times_executes_once_answers_three_times(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        tx = await backend.send_command(bank, copies=3)
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 3)
        assert device.executed == {tx: 1}
        raw = {r.payload for r in backend.on(bank, "response")}
        assert len(raw) == 1, "a duplicate gets the stored response, byte for byte"
        assert device.stats.outcomes == {"executed": 1, "replayed": 2}


async def test_thirty_percent_duplicates_over_fifty_opens_execute_each_once(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    faults = Faults(duplicate_rate=0.3)
    options = DeviceOptions(**{**OPTIONS.__dict__, "door_dwell_seconds": 0.02})
    async with online_device(mosquitto, backend, tmp_path, faults=faults, options=options) as (
        device,
        bank,
    ):
        redelivery = random.Random(3)
        txs = []
        for i in range(50):
            copies = 2 if redelivery.random() < 0.3 else 1  # the broker redelivers too
            txs.append(
                await backend.send_command(
                    bank, data={"compartment_number": i % 12 + 1}, copies=copies
                )
            )
        await backend.wait_for(lambda: all(backend.responses(bank, tx) for tx in txs))
        await device.wait_for(lambda d: d.stats.commands_received >= 50, T)
        assert sorted(device.executed) == sorted(txs)
        assert set(device.executed.values()) == {1}
        assert all(r.result == "success" for r in backend.responses(bank))
        assert device.stats.responses_sent > 50, "the duplicate fault sent extra copies"


async def test_expired_command_is_refused_and_not_executed(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        tx = await backend.send_command(bank, expires_in=-1.0)
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        (response,) = backend.responses(bank, tx)
        assert (response.result, response.error_code) == ("error", "COMMAND_EXPIRED")
        assert device.executed == {}

        # a device clock running two minutes ahead finds a 60 s command expired too
        device.faults = Faults(clock_skew_seconds=120)
        tx = await backend.send_command(bank, expires_in=60.0)
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        assert backend.responses(bank, tx)[0].error_code == "COMMAND_EXPIRED"
        assert device.executed == {}
        assert set(device.door_states.values()) == {"closed"}


async def test_unknown_compartment(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        tx = await backend.send_command(bank, data={"compartment_number": 99})
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        assert backend.responses(bank, tx)[0].error_code == "COMPARTMENT_NOT_FOUND"
        assert device.executed == {}


async def test_jam_drop_and_lost_response_faults(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path, faults=Faults(jam_rate=1.0)) as (
        device,
        bank,
    ):
        jammed = await backend.send_command(bank, data={"compartment_number": 2})
        await backend.wait_for(lambda: len(backend.responses(bank, jammed)) == 1)
        assert backend.responses(bank, jammed)[0].error_code == "DOOR_JAMMED"
        assert device.executed[jammed] == 1 and device.door_states[2] == "closed"

        device.faults = Faults(drop_rate=1.0)
        dropped = await backend.send_command(bank)
        await device.wait_for(lambda d: d.stats.outcomes["dropped"] == 1, T)
        assert dropped not in device.executed

        device.faults = Faults(lose_response_rate=1.0)
        lost = await backend.send_command(bank)
        await device.wait_for(lambda d: lost in d.executed, T)
        device.faults = Faults()
        await backend.send_command(bank, transaction_id=lost)  # the backend asks again
        await backend.wait_for(lambda: len(backend.responses(bank, lost)) == 1)
        assert backend.responses(bank, lost)[0].result == "success"
        assert device.executed[lost] == 1
        assert all(e.door_data().compartment_number != 2 for e in backend.events(bank))


async def test_apply_config_acknowledges_hash_and_changes_heartbeat_interval(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        mapping = [CompartmentMapping(id=i, slaveId=1, address=i - 1) for i in (1, 2, 3, 4)]
        expected = config_hash(mapping, 1)
        data = {
            "config_hash": expected,
            "heartbeat_interval_seconds": 1,
            "compartments": [m.model_dump() for m in mapping],
        }
        tx = await backend.send_command(bank, "apply_config", data)
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        (response,) = backend.responses(bank, tx)
        assert response.result == "success"
        assert response.applied_config_hash == expected
        assert device.heartbeat_interval == 1.0

        # heartbeats now come about once a second (they came every 0.2 s before)
        start = len(backend.heartbeats(bank))
        await backend.wait_for(lambda: len(backend.heartbeats(bank)) >= start + 2)
        beats = backend.heartbeats(bank)[start : start + 2]
        gap = beats[1].model.data.timestamp - beats[0].model.data.timestamp
        assert timedelta(seconds=0.5) <= gap <= timedelta(seconds=2.0)

        # the new numbering applies: compartment 5 is gone
        tx5 = await backend.send_command(bank, data={"compartment_number": 5})
        await backend.wait_for(lambda: len(backend.responses(bank, tx5)) == 1)
        assert backend.responses(bank, tx5)[0].error_code == "COMPARTMENT_NOT_FOUND"

        # a wrong hash in the command: the device reports the hash it computed itself
        data["config_hash"] = "0" * 64
        tx_bad = await backend.send_command(bank, "apply_config", data)
        await backend.wait_for(lambda: len(backend.responses(bank, tx_bad)) == 1)
        assert backend.responses(bank, tx_bad)[0].applied_config_hash == expected


# --- crashes, last will, restarts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "executions", "reask_result"),
    [
        ("after_action", 1, ("error", "UNKNOWN_ERROR")),
        ("before_action", 0, ("error", "UNKNOWN_ERROR")),
        ("before_response", 1, ("success", None)),
    ],
)
async def test_crash_mid_command_then_reask_never_repeats_the_action(
    mosquitto: MosquittoBroker,
    backend: FakeBackend,
    tmp_path: Path,
    point: str,
    executions: int,
    reask_result: tuple[str, str | None],
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        device.arm_crash(point)  # type: ignore[arg-type]  # any crash point, as the command line
        tx = await backend.send_command(bank)
        await device.wait_for(lambda d: d.status == DeviceStatus.CRASHED, T)
        await backend.wait_for(lambda: len(backend.wills(bank)) == 1)
        assert backend.responses(bank, tx) == []
        assert device.executed.get(tx, 0) == executions

        await device.start()
        await device.wait_until_online(T)
        for attempt in (1, 2):  # the backend asks again (twice): same answer, no action
            await backend.send_command(bank, transaction_id=tx)
            await backend.wait_for(lambda n=attempt: len(backend.responses(bank, tx)) == n)
        first, second = backend.responses(bank, tx)
        assert (first.result, first.error_code) == reask_result
        assert first == second
        assert device.executed.get(tx, 0) == executions


async def test_crash_fires_the_last_will_and_clean_stop_does_not(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        await device.crash()
        await backend.wait_for(lambda: len(backend.wills(bank)) == 1)
        (will,) = backend.wills(bank)
        assert will.model.reason == "mqtt_last_will"
        assert device.status == DeviceStatus.CRASHED
        # the will is not retained: the retained state is still the last heartbeat
        assert isinstance(await retained(mosquitto, topics.device_topic(bank, "state")), Heartbeat)

        await device.start()
        await device.wait_until_online(T)
        await device.stop()
        marker = "test/marker"
        await backend.publish(marker, b"{}")
        await backend.wait_for(lambda: any(r.topic == marker for r in backend.received))
        assert len(backend.wills(bank)) == 1, "a clean DISCONNECT discards the will"


async def test_commands_sent_while_offline_arrive_through_the_persistent_session(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        await device.crash()
        tx = await backend.send_command(bank)
        await device.start()
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        assert device.executed == {tx: 1}


async def test_dropped_connection_reconnects_and_dedup_survives_a_new_process(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        tx = await backend.send_command(bank)
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        assert device.drop_connection()
        await backend.wait_for(lambda: len(backend.wills(bank)) == 1)
        await device.wait_for(lambda d: d.online.is_set() and d.stats.connects == 2, T)
        assert device.stats.connection_losses == 1

    # a fresh process (new object, same state dir) answers the old transaction from disk
    reborn = make_device(mosquitto, tmp_path, None)
    await reborn.start()
    try:
        await reborn.wait_until_online(T)
        await backend.send_command(bank, transaction_id=tx)
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 2)
        first, again = backend.on(bank, "response")[:2]
        assert first.payload == again.payload
        assert reborn.executed == {}
    finally:
        await reborn.stop()


async def test_devices_reconnect_after_broker_restart(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        mosquitto.restart()
        await device.wait_for(lambda d: d.stats.connects == 2 and d.online.is_set(), T)
        # resubscribed: a command still works (the backend peer reconnects too)
        async with FakeBackend(mosquitto.host, mosquitto.port).running() as peer:
            tx = await peer.send_command(bank)
            await peer.wait_for(lambda: len(peer.responses(bank, tx)) == 1)
        assert device.executed == {tx: 1}


# --- contract and upstream form -----------------------------------------------------------


async def test_every_kind_of_device_message_passes_the_contract(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        txs = [
            await backend.send_command(bank),
            await backend.send_command(bank, data={"compartment_number": 77}),
            await backend.send_command(bank, expires_in=-5),
            await backend.send_command(bank, "update_firmware", {"url": "x"}),
            await backend.send_command(bank, data={"compartment_number": "three"}),
        ]
        mapping = [CompartmentMapping(id=1, slaveId=1, address=0)]
        txs.append(
            await backend.send_command(
                bank,
                "apply_config",
                {
                    "config_hash": config_hash(mapping, 2),
                    "heartbeat_interval_seconds": 2,
                    "compartments": [m.model_dump() for m in mapping],
                },
            )
        )
        await backend.wait_for(lambda: all(backend.responses(bank, tx) for tx in txs))
        device.faults = Faults(jam_rate=1.0)
        txs.append(await backend.send_command(bank))
        device.scan_qr("https://example.invalid/qr?x=1")
        await backend.wait_for(lambda: all(backend.responses(bank, tx) for tx in txs))
        await backend.wait_for(lambda: len(backend.events(bank)) >= 3)
        await device.crash()
        await backend.wait_for(lambda: len(backend.wills(bank)) == 1)
        codes = [backend.responses(bank, tx)[0].error_code for tx in txs]
        assert codes == [
            None,
            "COMPARTMENT_NOT_FOUND",
            "COMMAND_EXPIRED",
            "UNSUPPORTED_ACTION",
            "INVALID_PAYLOAD",
            None,
            "DOOR_JAMMED",
        ]
        kinds = {type(r.model).__name__ for r in backend.received if r.model is not None}
        assert kinds >= {
            "RegisterRequest",
            "Heartbeat",
            "CommandResponse",
            "DeviceEvent",
            "ConnectionLost",
        }
        assert {e.event for e in backend.events(bank)} == {"door_state_changed", "qr_scanned"}
    # the fixture asserts that no message broke the contract


async def test_upstream_form_uses_message_ids_and_split_state_topics(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    backend.upstream = True
    options = DeviceOptions(**{**OPTIONS.__dict__, "upstream": True})
    async with online_device(mosquitto, backend, tmp_path, options=options) as (device, bank):
        tx = await backend.send_command(bank, data={"compartment_number": 4})
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        await backend.wait_for(lambda: len(backend.heartbeats(bank, "state/heartbeat")) >= 2)
        await backend.wait_for(lambda: len(backend.on(bank, "state/compartments")) >= 3)
        await device.crash()
        await backend.wait_for(lambda: len(backend.wills(bank, "state/connection")) == 1)

        assert backend.registrations()[0].model.message_id
        assert backend.responses(bank, tx)[0].message_id
        assert backend.on(bank, "state") == []
        snapshots = [r.model for r in backend.on(bank, "state/compartments")]
        last = await retained(mosquitto, topics.device_topic(bank, "state/compartments"))
        assert last == snapshots[-1]
        # the upstream client publishes heartbeats with retain=false
        assert not any(r.retain for r in backend.heartbeats(bank, "state/heartbeat"))
        door4 = [
            next(c["door_state"] for c in s.compartments if c["compartment_number"] == 4)
            for s in snapshots
        ]
        assert door4[0] == "closed" and "open" in door4 and door4[-1] == "closed"
        ids = [r.model.message_id for r in backend.received if r.model is not None]
        assert len(ids) == len(set(ids)), "every message carries its own message_id"


# --- hostile helpers ----------------------------------------------------------------------


async def test_hostile_helpers_send_what_they_claim(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    backend.strict = False  # garbage is the point here
    _, victim = backend.add_bank()
    async with online_device(mosquitto, backend, tmp_path) as (device, bank):
        sent = await spoof_other_bank(device, victim)
        names = await send_malformed(device)
        size = await send_oversized(device, 256 * 1024)
        count = len(MALFORMED_PAYLOADS) + 1
        await backend.wait_for(lambda: len(backend.on(bank, "response")) >= count)
        await backend.wait_for(
            lambda: {r.topic for r in backend.received if victim in r.topic} >= set(sent)
        )
    assert names == list(MALFORMED_PAYLOADS)
    garbage = backend.on(bank, "response")[-count:]
    for item in garbage:
        with pytest.raises(ContractError):
            parse(CommandResponse, item.payload)
    assert len(garbage[-1].payload) == size > 64 * 1024


# --- a fleet in one process ---------------------------------------------------------------


async def test_hundred_devices_provision_and_come_online_in_one_process(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    tokens = [backend.add_bank()[0] for _ in range(100)]
    options = DeviceOptions(**{**OPTIONS.__dict__, "heartbeat_interval": 1.0, "durable": False})
    fleet = Fleet(
        mosquitto.host,
        mosquitto.port,
        state_dir=tmp_path / "fleet",
        provisioning_user=PROVISIONING_USER,
        provisioning_password=PROVISIONING_PASSWORD,
        options=options,
    )
    await fleet.start(tokens)
    try:
        await fleet.wait_until_online(30)
        banks = set(backend.banks.values())
        await backend.wait_for(
            lambda: (
                {r.topic.split("/")[1] for r in backend.received if r.topic.endswith("/state")}
                >= banks
            ),
            timeout=30,
        )
        stats = fleet.stats()
        assert (stats.devices, stats.provisioned, stats.online) == (100, 100, 100)
        assert {d.bank_uuid for d in fleet} == banks
    finally:
        await fleet.stop()
    assert fleet.stats().online == 0


async def test_random_crashes_restart_and_connection_drops_reconnect(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    faults = Faults(crash_rate=1.0, restart_after_crash_seconds=0.05)
    async with online_device(mosquitto, backend, tmp_path, faults=faults) as (device, bank):
        tx = await backend.send_command(bank)
        await device.wait_for(lambda d: d.stats.crashes == 1 and d.online.is_set(), T)
        await backend.send_command(bank, transaction_id=tx)  # the backend asks again
        await backend.wait_for(lambda: len(backend.responses(bank, tx)) == 1)
        assert device.executed.get(tx, 0) <= 1
        assert backend.responses(bank, tx)[0].error_code in (None, "UNKNOWN_ERROR")

        device.faults = Faults(connection_drop_mean_seconds=0.05)
        device.drop_connection()  # the next session picks up the new drop rate
        await device.wait_for(lambda d: d.stats.injected_drops >= 3, T)
        device.faults = Faults()
        await device.wait_for(lambda d: d.online.is_set(), T)
        await backend.wait_for(lambda: len(backend.wills(bank)) >= 3)


async def test_run_simulator_runs_until_cancelled_and_resumes_from_state(
    mosquitto: MosquittoBroker, backend: FakeBackend, tmp_path: Path
) -> None:
    tokens = [backend.add_bank()[0] for _ in range(3)]
    started: asyncio.Queue[Fleet] = asyncio.Queue()
    run = functools.partial(
        run_simulator,
        mosquitto.host,
        mosquitto.port,
        state_dir=tmp_path / "sim",
        provisioning_user=PROVISIONING_USER,
        provisioning_password=PROVISIONING_PASSWORD,
        options=OPTIONS,
        upstream=True,
        on_started=started.put_nowait,
    )
    backend.upstream = True
    for tokens_arg in (tokens, None):  # first with tokens, then resumed from the state dir
        task = asyncio.create_task(run(tokens=tokens_arg))
        async with asyncio.timeout(T):
            fleet = await started.get()
        await fleet.wait_until_online(T)
        assert {d.bank_uuid for d in fleet} == set(backend.banks.values())
        assert all(d.options.upstream for d in fleet)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert fleet.stats().online == 0
    assert len(backend.registrations()) == 3, "resumed devices did not register again"
