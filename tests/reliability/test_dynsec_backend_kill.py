"""AUTH_MODE=dynsec: the fleet survives its backend (DESIGN 5.1, issue 17).

Mosquitto runs from deploy/mosquitto-dynsec.conf as shipped (plugin file made by
`mosquitto_ctrl dynsec init`), a real `locker-console --headless` process administers it.
Banks are provisioned through the backend over MQTT; then every device publishes
`qr_scanned` events (QoS 1, unique `event_id`) while the backend is SIGKILLed and, a few
seconds later, restarted. With go-auth and its cache off the same kill cut off 500 of 500
devices; here: no device loses its connection, and every event a device got a PUBACK for
(also those sent while the backend was dead: the broker queues them in the backend's
persistent session) is in the store exactly once afterwards.

CI size: 100 devices for 60 s; full size (RELIABILITY_SCALE=full): 500 devices, 120 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from backend.accounts import NoAccountDirectory
from backend.service import LockerService
from tests.conftest import make_settings
from tests.reliability.conftest import size
from tests.support.dynsec import deployed_dynsec_mosquitto, needs_dynsec, provision
from tests.support.headless_instances import headless_instance
from tests.support.reliability_tools import SqlProbe, log, until

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
    pytest.mark.timeout(SECONDS + 240),
]


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
        self.disconnects = 0
        self.errors: list[str] = []

    async def run(self, until_time: float, rng: random.Random) -> None:
        topic = f"locker/{self.user}/event"
        try:
            async with self.client:
                await asyncio.sleep(rng.random() / RATE)  # spread the fleet over a second
                while time.monotonic() < until_time:
                    payload = {
                        "type": "event",
                        "event": "qr_scanned",
                        "event_id": f"{self.user[:8]}-{self.acked}",
                        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                        "data": {"qr_payload": f"ticket-{self.acked}", "scanner": "front"},
                    }
                    await self.client.publish(topic, json.dumps(payload), qos=1, timeout=10)
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
                for i in range(DEVICES):
                    created = await operator.create_bank(f"bank {i}", "kill test", 2)
                    client_id = f"locker-client-{i:08x}"
                    reply = await provision(operator_settings, created.token, client_id)
                    assert reply["status"] == "success", reply
                    data = reply["data"]
                    devices.append(
                        Device(broker.port, data["mqtt_user"], data["mqtt_password"], client_id)
                    )
                rng = random.Random(17)
                end = time.monotonic() + SECONDS
                fleet = [asyncio.create_task(d.run(end, rng)) for d in devices]
                await asyncio.sleep(KILL_AT)  # the fleet publishes with the backend alive
                log(f"SIGKILL backend at {KILL_AT} s; {sum(d.acked for d in devices)} acked")
                await backend.kill()
                await asyncio.sleep(DEAD_FOR)  # the outage: devices keep publishing
                dead_acked = sum(d.acked for d in devices)
                await backend.start()
                await backend.wait_healthy(http, 30)
                log(f"backend back; {dead_acked} acked so far")
                await asyncio.gather(*fleet)
                sent = sum(d.acked for d in devices)
                disconnects = sum(d.disconnects for d in devices)
                log(f"{sent} events acked by the broker, {disconnects} device disconnects")
                assert disconnects == 0, [e for d in devices for e in d.errors][:5]
                stored = await until(
                    lambda: probe.scalar(
                        "SELECT count(*) FROM stored_events WHERE event_type = 'QrScanned'"
                    ),
                    lambda n: n >= sent,
                    f"all {sent} acked events processed",
                    timeout=60,
                )
                assert stored == sent  # exactly once (event_id dedup across the kill)
                log(f"processed {stored} of {sent}; expected rate ~{DEVICES * RATE:.0f}/s")
            finally:
                await backend.stop()
                operator.close()
                probe.close()
                print(backend.log_tail(15))
