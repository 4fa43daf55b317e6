"""Two `--headless` instances (shared group, one PostgreSQL) behind the real Mosquitto 2.0 +
go-auth from deploy/mosquitto.conf as shipped, go-auth asking instance B's hook routes
(`--headless` keeps serving them on HTTP_PORT for small sites).

* Banks provisioned by instance A (registrations are dealt over both) log in through B's
  hook at their first CONNECT: B's hook refuses nothing (store look-up on a miss, change
  feed).
* Stopping A leaves `server/status` `online`: A's goodbye says `offline`, B re-publishes
  `online` within a second; the retained value a device reads afterwards is `online`.
  `server/status/a` says `offline`, `server/status/b` `online` with a fresh timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from backend.domain.timeutil import parse_iso
from backend.service import LockerService
from simulator.device import DeviceOptions
from simulator.fleet import Fleet
from tests.support.databases import truncate_all
from tests.support.goauth_broker import GoAuthBroker, goauth_available, run_goauth_mosquitto
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.reliability_tools import SqlProbe, log
from tests.support.settings import TEST_SECRETS_ENV, make_settings
from tests.support.waiting import until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.mosquitto,
    pytest.mark.skipif(not goauth_available(), reason="mosquitto or go-auth.so missing"),
    pytest.mark.timeout(240),
]

BANKS = 10
SECRETS = TEST_SECRETS_ENV


class Watcher:
    """A backend-user client recording `server/status` and `server/status/+` (retained
    ones included) with their arrival times."""

    def __init__(self, broker: GoAuthBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.seen: list[tuple[float, str, dict[str, str], bool]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        await asyncio.wait_for(ready.wait(), 10)

    async def _run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username="locker_backend",
            password=SECRETS["MQTT_PASSWORD"],
            identifier=self.name,
        ) as mqtt:
            await mqtt.subscribe([("server/status", 1), ("server/status/+", 1)])
            ready.set()
            async for message in mqtt.messages:
                assert isinstance(message.payload, bytes)
                self.seen.append(
                    (
                        time.monotonic(),
                        str(message.topic),
                        json.loads(message.payload),
                        bool(message.retain),
                    )
                )

    def last(self, topic: str) -> dict[str, str] | None:
        found = [body for _, t, body, _ in self.seen if t == topic]
        return found[-1] if found else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task


async def test_provisioned_on_a_known_to_bs_hook_and_a_leaving_keeps_the_fleet_online(
    tmp_path: Path, postgres_url: str
) -> None:
    truncate_all(postgres_url)
    settings = {"DATABASE_URL": postgres_url, "MQTT_SHARED_GROUP": "lockers", **SECRETS}
    operator = LockerService(make_settings(tmp_path / "operator", database_url=postgres_url))
    store = SqlProbe(postgres_url)
    b = headless_instance("b", tmp_path / "b", settings, MQTT_INSTANCE_ID="b")
    instances: list[HeadlessInstance] = [b]
    fleet: Fleet | None = None
    async with aiohttp.ClientSession() as session:
        try:
            with run_goauth_mosquitto(
                tmp_path, hook_port=b.http_port, secret=SECRETS["MOSQ_SECRET"]
            ) as broker:
                mqtt = {"MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port)}
                b.env.update(mqtt)
                a = headless_instance(
                    "a", tmp_path / "a", {**settings, **mqtt}, MQTT_INSTANCE_ID="a"
                )
                instances.append(a)
                await b.start()
                await b.wait_healthy(session, 60)
                await a.start()
                await a.wait_healthy(session, 60)

                created = [
                    await operator.create_bank(f"Bank {n}", "Two", 2, heartbeat_interval_seconds=5)
                    for n in range(BANKS)
                ]
                fleet = Fleet(
                    broker.host,
                    broker.port,
                    state_dir=tmp_path / "sim",
                    provisioning_password=SECRETS["MQTT_PROVISIONING_PASSWORD"],
                    options=DeviceOptions(
                        heartbeat_interval=5, compartments=2, door_dwell_seconds=None, durable=False
                    ),
                )
                await fleet.start([c.token for c in created])
                await fleet.wait_until_online(60)
                await until(
                    lambda: store.scalar(
                        "SELECT count(*) FROM locker_banks WHERE status = 'online'"
                    ),
                    lambda n: n == BANKS,
                    "every bank online",
                    60,
                )
                on_a = (await a.metrics(session)).get(
                    "locker_mqtt_registrations_total", result="success"
                )
                hook_b = await b.metrics(session)
                log(f"provisioned on A: {on_a:.0f} of {BANKS}")
                assert on_a > 0, "no registration reached instance A"
                assert hook_b.get("locker_hook_requests_total", endpoint="auth", result="deny") == 0
                assert sum(d.stats.connect_failures for d in fleet) == 0

                # ----- A stops; server/status must stay online ----------------------------
                watcher = Watcher(broker, "status-watcher")
                await watcher.start()
                await until(
                    lambda: _value(watcher.last("server/status/b")),
                    lambda body: body is not None,
                    "b's retained instance status",
                    10,
                    0.05,
                )
                assert await a.stop() == 0
                stopped = time.monotonic()
                await until(
                    lambda: _value(watcher.last("server/status")),
                    lambda body: (
                        body == {"status": "online"}
                        and any(
                            t == "server/status" and body.get("status") == "offline"
                            for _, t, body, _ in watcher.seen
                        )
                    ),
                    "offline (A's goodbye) then online (B)",
                    10,
                    0.05,
                )
                offline_at = next(
                    at
                    for at, t, body, _ in watcher.seen
                    if t == "server/status" and body["status"] == "offline" and at >= stopped - 5
                )
                online_at = next(
                    at
                    for at, t, body, _ in watcher.seen
                    if t == "server/status" and body["status"] == "online" and at > offline_at
                )
                log(f"online again {online_at - offline_at:.3f} s after A's offline")
                assert online_at - offline_at < 1.0
                await watcher.stop()

                # What a device reads from now on (retained): online; the instances' own.
                fresh = Watcher(broker, "fresh-reader")
                await fresh.start()
                await until(
                    lambda: _value(len({t for _, t, _, _ in fresh.seen})),
                    lambda n: n >= 3,
                    "three retained statuses",
                    10,
                    0.05,
                )
                await fresh.stop()
                assert fresh.last("server/status") == {"status": "online"}
                status_a = fresh.last("server/status/a")
                status_b = fresh.last("server/status/b")
                assert status_a is not None and status_a["status"] == "offline"
                assert status_b is not None and status_b["status"] == "online"
                age = datetime.now(UTC) - parse_iso(status_b["timestamp"])
                assert age.total_seconds() < 30
                assert all(d.server_online for d in fleet)  # the devices' own view
                assert sum(d.stats.connection_losses for d in fleet) == 0
                await fleet.stop()
                fleet = None
                await b.stop()
        finally:
            if fleet is not None:
                await fleet.stop()
            for instance in instances:
                await instance.stop()
                print(f"--- {instance.name}\n{instance.log_tail(12)}")
            operator.close()
            store.close()


async def _value(value: object) -> object:
    return value
