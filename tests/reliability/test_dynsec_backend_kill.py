"""AUTH_MODE=dynsec: the fleet survives its backend (DESIGN 5.1, issue 17).

Mosquitto runs from deploy/mosquitto-dynsec.conf as shipped (plugin file made by
`mosquitto_ctrl dynsec init`), a real `locker-console --headless` process administers it.
Banks are provisioned through the backend over MQTT; then every device publishes
`qr_scanned` events (QoS 1, unique `event_id`) while the backend is SIGKILLed and, a few
seconds later, restarted. With go-auth and its cache off the same kill cut off 500 of 500
devices. Asserted here: no device loses its connection; every event sent while the backend
was dead (queued by the broker in the backend's persistent session) is in the store; every
event the broker acknowledged to a device is in the store exactly once (one domain event
per `event_id`). The backend acknowledges a message to the broker only once it is stored
(`backend/mqtt/acks.py`), so what it had received but not committed when killed is sent
again to the restarted one. Before that (RELIABILITY.md F6, F7) the kill lost it: about 1
event at CI size, 5,879 of 33,285 at full size on a loaded machine; and an event the dying
backend had taken whose device saw its PUBACK just after the kill counted as "sent while
dead" and was never stored (F7).

CI size: 100 devices for 60 s; full size (RELIABILITY_SCALE=full): 500 devices, 120 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from backend.accounts import NoAccountDirectory
from backend.service import LockerService
from tests.support.dynsec import deployed_dynsec_mosquitto, needs_dynsec, provision
from tests.support.headless_instances import headless_instance
from tests.support.reliability_tools import SqlProbe, log, size
from tests.support.settings import make_settings
from tests.support.waiting import until

DEVICES = size("dynsec_devices", 100, 500)
SECONDS = size("dynsec_seconds", 60, 120)
KILL_AT = SECONDS // 4
DEAD_FOR = 5.0
RATE = 1.0  # events per device per second
ADMIN = ("locker_dynsec_admin", "admin-pw")
SECRETS = {
    "MQTT_PASSWORD": "backend-pw",
    "MQTT_PROVISIONING_PASSWORD": "provisioning-pw",
    "SECRET_KEY": "test-secret-key",
    "DYNSEC_ADMIN_USER": ADMIN[0],
    "DYNSEC_ADMIN_PASSWORD": ADMIN[1],
}

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.mosquitto,
    needs_dynsec,
    pytest.mark.timeout(SECONDS + 600),
]


async def settled(read: Callable[[], Awaitable[set[str]]], expected: set[str]) -> set[str]:
    """What was processed once the backend caught up: every expected key, or no new one
    for 10 s (then the rest is lost, not late). Polls with a deadline."""
    keys = await read()
    last_growth = time.monotonic()
    deadline = time.monotonic() + 600
    while not expected <= keys and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # polling a condition with a deadline
        now = await read()
        if len(now) > len(keys):
            last_growth = time.monotonic()
        keys = now
        if time.monotonic() - last_growth > 10:
            break
    return keys


class Device:
    """A bank's device: its own connection, publishing events; counts what was acked."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.client = aiomqtt.Client(
            "127.0.0.1",
            port,
            username=user,
            password=password,
            identifier=client_id,
            clean_session=False,
            keepalive=10,
        )
        self.user = user
        self.acked = 0
        self.sent: list[tuple[str, float]] = []  # (event_id, when the broker acked it)
        self.disconnects = 0
        self.errors: list[str] = []

    async def run(self, until_time: float, rng: random.Random) -> None:
        topic = f"locker/{self.user}/event"
        try:
            async with self.client:
                await asyncio.sleep(rng.random() / RATE)  # spread the fleet over a second
                while time.monotonic() < until_time:
                    event_id = f"{self.user[:8]}-{self.acked}"
                    payload = {
                        "type": "event",
                        "event": "qr_scanned",
                        "event_id": event_id,
                        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                        "data": {"qr_payload": f"ticket-{self.acked}", "scanner": "front"},
                    }
                    await self.client.publish(topic, json.dumps(payload), qos=1, timeout=10)
                    self.sent.append((event_id, time.monotonic()))
                    self.acked += 1
                    await asyncio.sleep(1 / RATE)
        except aiomqtt.MqttError as exc:
            self.disconnects += 1
            self.errors.append(str(exc))


async def test_backend_sigkill_does_not_touch_the_fleet(tmp_path: Path) -> None:
    with deployed_dynsec_mosquitto(tmp_path / "broker", *ADMIN) as broker:
        db_url = f"sqlite:///{tmp_path / 'backend' / 'data' / 'locker.db'}"
        backend = headless_instance(
            "dynsec",
            tmp_path / "backend",
            {
                "AUTH_MODE": "dynsec",
                "MQTT_HOST": broker.host,
                "MQTT_PORT": str(broker.port),
                "DATABASE_URL": db_url,
                **SECRETS,
            },
        )
        operator_settings = make_settings(
            tmp_path / "operator",
            database_url=db_url,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            auth_mode="dynsec",
            dynsec_admin_password=ADMIN[1],
        )
        operator = LockerService(operator_settings, accounts=NoAccountDirectory())
        probe = SqlProbe(db_url)
        devices: list[Device] = []
        async with aiohttp.ClientSession() as http:
            try:
                await backend.start()
                await backend.wait_healthy(http, 30)
                log(f"provisioning {DEVICES} banks through the backend")
                tokens = [
                    (await operator.create_bank(f"bank {i}", "kill test", 2)).token
                    for i in range(DEVICES)
                ]

                async def provisioned(i: int, token: str) -> Device:
                    client_id = f"locker-client-{i:08x}"
                    reply = await provision(operator_settings, token, client_id, timeout=30)
                    assert reply["status"] == "success", reply
                    data = reply["data"]
                    return Device(broker.port, data["mqtt_user"], data["mqtt_password"], client_id)

                for start in range(0, DEVICES, 25):
                    chunk = list(enumerate(tokens))[start : start + 25]
                    devices += await asyncio.gather(*(provisioned(i, t) for i, t in chunk))
                log(f"{len(devices)} banks provisioned")
                rng = random.Random(17)
                end = time.monotonic() + SECONDS
                fleet = [asyncio.create_task(d.run(end, rng)) for d in devices]
                await asyncio.sleep(KILL_AT)  # the fleet publishes with the backend alive
                log(f"SIGKILL backend at {KILL_AT} s; {sum(d.acked for d in devices)} acked")
                killed_at = time.monotonic()
                await backend.kill()
                await asyncio.sleep(DEAD_FOR)  # the outage: devices keep publishing
                await backend.start()
                await backend.wait_healthy(http, 30)
                back_at = time.monotonic()
                log(f"backend back after {back_at - killed_at:.1f} s")
                await asyncio.gather(*fleet)
                sent = {e: t for d in devices for e, t in d.sent}
                disconnects = sum(d.disconnects for d in devices)
                log(f"{len(sent)} events acked by the broker, {disconnects} device disconnects")
                assert disconnects == 0, [e for d in devices for e in d.errors][:5]
                meanwhile = {e for e, t in sent.items() if killed_at <= t <= back_at}

                async def stored() -> set[str]:
                    rows = await probe.rows("SELECT message_key FROM processed_messages")
                    return {r.message_key for r in rows}

                done = await until(
                    stored,
                    lambda keys: meanwhile <= keys,
                    f"the {len(meanwhile)} events sent while the backend was dead processed",
                    timeout=300,
                )
                done = await settled(stored, set(sent))
                count = await probe.scalar(
                    "SELECT count(*) FROM stored_events WHERE event_type = 'QrScanned'"
                )
                assert count == len(await stored())  # one domain event per event_id, none twice
                lost = sorted(sent[e] - killed_at for e in set(sent) - done)
                log(
                    f"processed {len(done)} of {len(sent)}; all {len(meanwhile)} sent during "
                    f"the {back_at - killed_at:.1f} s outage processed; lost {len(lost)}"
                    + (f", acked {lost[0]:.1f} .. {lost[-1]:.1f} s from the kill" if lost else "")
                )
                # Nothing is lost: what the killed backend held unacknowledged came back.
                assert lost == [], lost[:5]
            finally:
                await backend.stop()
                operator.close()
                probe.close()
                print(backend.log_tail(15))
