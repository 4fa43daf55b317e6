"""The simulator's must-shows against the real backend (DESIGN sections 9, 10, 16).

The backend is `BackendServices` in this process (store on SQLite, HTTP hook, MQTT
runtime) with either its embedded broker (MQTT_HOST unset: devices authenticate
through the hook) or a private Mosquitto. The devices are `simulator` devices,
provisioned through the real token flow.

1. A hundred banks come online (read model `online` and config in sync).
2. With 30 % duplicated responses and events (device faults) and 30 % duplicated
   commands (the test republishes the very outbox payload a second time, as a broker
   redelivery or the backend's own re-ask would), every open acts once on the device and
   is one `CompartmentOpened` in the store; every duplicate is counted, none refused.
3. A device that crashes mid-command and boots again never acts twice: the backend asks
   again and gets `UNKNOWN_ERROR` (crash after the action, before the answer was stored)
   or the stored success (crash after it was stored, before it was sent).

Short intervals: heartbeat 1 s, COMMAND_RETRY_AFTER 1 s, COMMAND_TIMEOUT 10 s.
Nothing sleeps to wait: conditions are polled with a deadline.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select, text

from backend.config import Settings
from backend.runner import BackendServices
from backend.service import LockerService
from backend.store.tables import OutboxRow
from simulator.device import DeviceOptions, DeviceStatus, SimulatedDevice
from simulator.faults import CrashPoint, Faults
from simulator.fleet import Fleet
from tests.support.mosquitto import MosquittoBroker, free_port
from tests.support.mqtt_runtime_process import fast_options
from tests.support.settings import make_settings
from tests.support.waiting import until

BROKERS = ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
FLEET = 100
OPENS_PER_BANK = 2
DUPLICATE_RATE = 0.3
# Seconds between heartbeats. The embedded broker (amqtt) delivers one message at a time and
# asks the HTTP hook before each delivery, all in this process: a hundred banks beating every
# second (plus their retained-message writes) is more than it sustains here, so its banks
# beat every 5 s (the demo's interval).
HEARTBEAT = {"embedded": 5, "mosquitto": 1}


@dataclass
class Backend:
    """The running backend of one test and how to reach its broker."""

    services: BackendServices
    settings: Settings
    host: str
    port: int
    kind: str
    heartbeat: int

    @property
    def service(self) -> LockerService:
        return self.services.service

    async def scalar(self, sql: str, **params: Any) -> Any:
        def work() -> Any:
            with self.service.db.read_session() as session:
                return session.execute(text(sql), params).scalar()

        return await self.service.db.read(work)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        def work() -> list[Any]:
            with self.service.db.read_session() as session:
                return list(session.execute(text(sql), params))

        return await self.service.db.read(work)

    async def banks_online(self) -> int:
        return int(
            await self.scalar(
                "SELECT count(*) FROM locker_banks "
                "WHERE status = 'online' AND config_state = 'in_sync'"
            )
        )

    async def opened_events(self) -> Counter[str]:
        rows = await self.rows(
            "SELECT payload FROM stored_events WHERE event_type = 'CompartmentOpened'"
        )
        return Counter(json.loads(row.payload)["transaction_id"] for row in rows)

    async def events_of(self, event_type: str, transaction_id: str) -> list[dict[str, Any]]:
        rows = await self.rows(
            "SELECT payload FROM stored_events WHERE event_type = :e", e=event_type
        )
        payloads = [json.loads(row.payload) for row in rows]
        return [p for p in payloads if p.get("transaction_id") == transaction_id]

    def fleet(self, state_dir: Path, **kwargs: Any) -> Fleet:
        return Fleet(
            self.host,
            self.port,
            state_dir=state_dir,
            provisioning_user=self.settings.mqtt_provisioning_user,
            provisioning_password=self.settings.secret("mqtt_provisioning_password"),
            **kwargs,
        )

    def command_client(self) -> aiomqtt.Client:
        """A client allowed to publish commands: the backend's own user (the embedded
        broker asks the hook; the test Mosquitto is anonymous)."""
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.settings.mqtt_user,
            password=self.settings.secret("mqtt_password"),
            identifier=f"test-redeliver-{free_port()}",
        )


@pytest.fixture(params=BROKERS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    overrides: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'locker.db'}",
        "http_port": free_port(),
        "command_retry_after": 1.0,
        # An open expires when it times out (OPEN_TTL = COMMAND_TIMEOUT): generous here, this
        # test is about duplicates and a loaded CI machine must not turn answers late.
        "command_timeout": 120.0,
        "config_ttl": 120.0,
        "mqtt_client_id": f"backend-{free_port()}",
    }
    if request.param == "embedded":
        overrides["mqtt_port"] = free_port()
    else:
        broker: MosquittoBroker = request.getfixturevalue("mosquitto")
        overrides["mqtt_host"] = broker.host
        overrides["mqtt_port"] = broker.port
    settings = make_settings(tmp_path / "backend", **overrides)
    services = BackendServices(settings, runtime_options=fast_options())
    await services.start()
    try:
        await services.runtime.wait_connected(30)
        host = settings.mqtt_host or "127.0.0.1"
        heartbeat = HEARTBEAT[request.param]
        yield Backend(services, settings, host, settings.mqtt_port, request.param, heartbeat)
    finally:
        await services.stop()


async def _online_fleet(
    backend: Backend, tmp_path: Path, banks: int, faults: Faults, compartments: int = 4
) -> tuple[Fleet, dict[str, SimulatedDevice], float]:
    """Create `banks` banks, provision and start their devices; wait until all are online
    and configured in the read model. Returns the fleet, devices by bank, seconds taken."""
    interval = backend.heartbeat
    created = [
        await backend.service.create_bank(
            f"Sim {n:03d}", "E2E", compartments, heartbeat_interval_seconds=interval
        )
        for n in range(banks)
    ]
    fleet = backend.fleet(
        tmp_path / "sim",
        options=DeviceOptions(
            heartbeat_interval=interval, compartments=compartments, door_dwell_seconds=None
        ),
        faults=faults,
    )
    started = time.monotonic()
    await fleet.start([c.token for c in created])
    await fleet.wait_until_online(90)
    await until(backend.banks_online, lambda n: n == banks, f"{banks} banks online and in sync", 90)
    seconds = time.monotonic() - started
    devices = {}
    for c in created:
        device = fleet.by_bank(c.uuid)
        assert device is not None
        devices[c.uuid] = device
    return fleet, devices, seconds


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_hundred_banks_online_and_duplicates_never_act_twice(
    backend: Backend, tmp_path: Path
) -> None:
    faults = Faults(duplicate_rate=DUPLICATE_RATE)
    fleet, devices, seconds = await _online_fleet(backend, tmp_path, FLEET, faults)
    try:
        figures: dict[str, Any] = {"broker": backend.kind, "seconds_to_online": round(seconds, 1)}
        assert len({d.bank_uuid for d in devices.values()}) == FLEET

        # ----- opens, 30 % of the commands published twice -------------------------------
        rng = random.Random(7)
        tids: dict[str, str] = {}  # transaction -> bank
        for uuid in devices:
            for number in range(1, OPENS_PER_BANK + 1):
                txn = await backend.service.request_open(uuid, number, actor="e2e")
                tids[txn.transaction_id] = uuid
        chosen = sorted(t for t in tids if rng.random() < DUPLICATE_RATE)
        async with backend.command_client() as client:
            for tid in chosen:
                topic, payload = await _sent_command(backend, tid)
                await client.publish(topic, payload, qos=1)  # the same command again
        figures["opens"] = len(tids)
        figures["commands_duplicated"] = len(chosen)

        async def statuses() -> Counter[str]:
            return Counter([(await backend.service.get_transaction(t)).status for t in tids])

        await until(statuses, lambda c: c == Counter(success=len(tids)), "all opens success", 60.0)

        # Every command the device got twice was answered from its store, not acted on.
        for tid in chosen:
            device = devices[tids[tid]]
            await device.wait_for(lambda d, t=tid: d.stats.outcomes["replayed"] > 0, 30)
        replayed = sum(d.stats.outcomes["replayed"] for d in devices.values())
        assert replayed >= len(chosen)

        # Every response message the backend received was handled exactly once: applied
        # (the first answer of its transaction) or counted as a duplicate; none refused,
        # none lost (at least every copy the devices sent arrived; QoS 1 may add more when
        # a device republishes an unacknowledged message after a reconnect).
        metrics = backend.services.runtime.metrics

        async def accounted() -> tuple[int, int, int, int]:
            sent = sum(d.stats.responses_sent for d in devices.values())
            rows = await backend.rows(
                "SELECT count(first_seen_at), coalesce(sum(duplicate_count), 0) "
                "FROM command_transactions"
            )
            answered, duplicates = rows[0]
            return sent, metrics.messages["response"], int(answered), int(duplicates)

        sent, received, _answered, duplicates = await until(
            accounted,
            lambda a: a[1] >= a[0] and a[1] == a[2] + a[3],
            "every received response applied once or counted as a duplicate",
            60.0,
        )
        copies = {t: len(devices[b].responses_for(t)) for t, b in tids.items()}
        for tid in tids:
            txn = await backend.service.get_transaction(tid)
            assert txn.duplicate_count >= copies[tid] - 1, (tid, txn.duplicate_count)
        figures["response_copies_sent"] = sent
        figures["responses_received"] = received
        figures["duplicates_recorded"] = duplicates
        figures["open_copies_sent"] = sum(copies.values())
        figures["replayed_on_devices"] = replayed
        figures["device_connection_losses"] = fleet.stats().connection_losses
        assert duplicates >= sum(copies.values()) - len(tids) > 0
        assert await backend.scalar("SELECT count(*) FROM rejected_messages") == 0

        executed = [devices[b].executed.get(t, 0) for t, b in tids.items()]
        assert executed == [1] * len(tids), Counter(executed)
        opened = await backend.opened_events()
        assert [opened[t] for t in tids] == [1] * len(tids)
        assert all(d.status == DeviceStatus.ONLINE for d in devices.values())
        print("figures:", json.dumps(figures))
    finally:
        await fleet.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("point", "status", "error_code"),
    [("after_action", "error", "UNKNOWN_ERROR"), ("before_response", "success", None)],
)
async def test_a_device_crashing_mid_command_never_acts_twice(
    backend: Backend, tmp_path: Path, point: CrashPoint, status: str, error_code: str | None
) -> None:
    fleet, devices, _ = await _online_fleet(backend, tmp_path, 1, Faults())
    try:
        ((uuid, device),) = devices.items()
        device.arm_crash(point)
        txn = await backend.service.request_open(uuid, 2, actor="e2e")
        tid = txn.transaction_id
        await device.wait_for(lambda d: d.status == DeviceStatus.CRASHED, 30)
        assert device.executed[tid] == 1  # the door was pulsed before the crash
        assert not device.responses_for(tid)  # and nothing was said

        # The broker fired the last will: the bank is offline until the device is back.
        await until(
            lambda: backend.service.get_bank(uuid),
            lambda b: b.status == "offline",
            "offline after the crash",
            30,
        )
        await device.start()  # boots from its persisted state
        done = await until(
            lambda: backend.service.get_transaction(tid),
            lambda t: t.status not in ("pending", "sent"),
            "the re-asked command answered",
            30,
        )
        assert done.status == status
        assert done.error_code == error_code
        assert device.executed[tid] == 1  # asked again, never acted again
        assert device.stats.outcomes["interrupted" if error_code else "replayed"] >= 1
        opened = await backend.events_of("CompartmentOpened", tid)
        failed = await backend.events_of("CommandFailed", tid)
        if error_code:
            assert opened == [] and len(failed) == 1
            assert failed[0]["error_code"] == "UNKNOWN_ERROR"
        else:
            assert len(opened) == 1 and failed == []
        attempts = await backend.scalar(
            "SELECT attempts FROM command_transactions WHERE transaction_id = :t", t=tid
        )
        assert attempts >= 2  # the backend asked again
        await until(
            lambda: backend.service.get_bank(uuid),
            lambda b: b.status == "online",
            "online again",
            30,
        )
    finally:
        await fleet.stop()


async def _sent_command(backend: Backend, transaction_id: str) -> tuple[str, bytes]:
    """The topic and payload of a command the relay has published (waits for it)."""

    async def row() -> tuple[str, str] | None:
        def work() -> tuple[str, str] | None:
            with backend.service.db.read_session() as session:
                found = session.execute(
                    select(OutboxRow.topic, OutboxRow.payload)
                    .where(OutboxRow.transaction_id == transaction_id)
                    .where(OutboxRow.status == "sent")
                    .order_by(OutboxRow.id)
                ).first()
                return (found[0], found[1]) if found else None

        return await backend.service.db.read(work)

    found = await until(row, lambda r: r is not None, f"command {transaction_id} sent", 30)
    assert found is not None
    return found[0], found[1].encode()
