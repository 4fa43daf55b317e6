"""Issue 8, item 3 (and issue 15): stale commands.

The MQTT runtime (in process, Mosquitto, SQLite, OPEN_TTL small) and simulated banks
(MQTT 3.1.1 devices). Half of the banks go offline (clean DISCONNECT, persistent session
kept by the broker), get an open command published into their session, and stay away until
it has expired. With the backend speaking MQTT 5 (the default towards Mosquitto) every
command carries the Message Expiry Interval: Mosquitto drops the expired queued command and
the 3.1.1 device never even receives it. With the backend forced to 3.1.1 the queued command
reaches the device late and the device refuses it by its `expires_at`. Either way it never
opens a door. The other half come back within the TTL: the command is executed exactly once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from backend.mqtt.runtime import MqttRuntime
from backend.service import LockerService
from simulator.device import DeviceOptions, SimulatedDevice
from simulator.fleet import Fleet
from tests.support.mosquitto import MosquittoBroker
from tests.support.mqtt_runtime_process import fast_options
from tests.support.reliability_tools import SqlProbe, size
from tests.support.settings import make_settings
from tests.support.waiting import until

BANKS = size("stale_banks", 10, 100)
TTL = 5.0

pytestmark = [pytest.mark.reliability, pytest.mark.mosquitto, pytest.mark.timeout(300)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_offline_past_the_ttl_never_executes_back_within_executes_once(
    tmp_path: Path, mosquitto: MosquittoBroker, protocol: str
) -> None:
    db_url = f"sqlite:///{tmp_path / 'locker.db'}"
    service = LockerService(
        make_settings(
            tmp_path,
            database_url=db_url,
            mqtt_host=mosquitto.host,
            mqtt_port=mosquitto.port,
            mqtt_client_id=f"backend-{uuid.uuid4().hex[:8]}",
            command_timeout=60.0,
            open_ttl=TTL,
            command_retry_after=60.0,
            mqtt_protocol=protocol,
        )
    )
    await service.migrate()
    runtime = MqttRuntime(service, fast_options())
    probe = SqlProbe(db_url)
    fleet = Fleet(
        mosquitto.host,
        mosquitto.port,
        state_dir=tmp_path / "sim",
        provisioning_password="y",
        options=DeviceOptions(
            heartbeat_interval=5, compartments=2, door_dwell_seconds=None, durable=False
        ),
    )
    figures: dict[str, Any] = {"banks": BANKS, "ttl_seconds": TTL, "protocol": protocol}
    try:
        await runtime.start()
        await runtime.wait_connected(20)
        created = [
            await service.create_bank(f"Stale {n}", "Lab", 2, heartbeat_interval_seconds=5)
            for n in range(BANKS)
        ]
        await fleet.start([c.token for c in created])
        await fleet.wait_until_online(60)
        devices: dict[str, SimulatedDevice] = {}
        for c in created:
            device = fleet.by_bank(c.uuid)
            assert device is not None
            devices[c.uuid] = device
        await until(
            lambda: probe.scalar("SELECT count(*) FROM locker_banks WHERE config_state='in_sync'"),
            lambda n: n == BANKS,
            "configs applied",
            60,
        )
        away = [c.uuid for c in created[: BANKS // 2]]
        back = [c.uuid for c in created[BANKS // 2 :]]
        await asyncio.gather(*(devices[u].stop() for u in away + back))
        tids = {
            u: (await service.request_open(u, 1, actor="stale")).transaction_id for u in devices
        }

        async def statuses() -> dict[str, str]:
            return await probe.statuses()

        # Every command is in the brokers' sessions (PUBACK) while its device is away.
        await until(
            statuses,
            lambda s: all(s[t] in ("sent", "expired") for t in tids.values()),
            "commands published into the offline sessions",
            30,
            0.05,
        )
        # Back within the TTL: restart at once.
        await asyncio.gather(*(devices[u].start() for u in back))
        # Away past the TTL: only once the backend has expired the command.
        await until(
            statuses,
            lambda s: all(s[tids[u]] == "expired" for u in away),
            "commands of the away banks expired",
            TTL + 30,
        )
        await asyncio.gather(*(devices[u].start() for u in away))
        await fleet.wait_until_online(60)
        final = await until(
            statuses,
            lambda s: all(s[tids[u]] == "success" for u in back),
            "commands of the returning banks executed",
            60,
        )
        if protocol == "3.1.1":
            # The away devices received their queued command late and refused it.
            await until(
                lambda: asyncio.sleep(0, sum(devices[u].stats.outcomes["refused"] for u in away)),
                lambda n: n == len(away),
                "late commands refused by the away devices",
                30,
            )
        else:
            # Mosquitto dropped the expired queued command: a fresh open sent after it (same
            # session, delivered in order) arrives, the stale one never did.
            fresh = {
                u: (await service.request_open(u, 2, actor="stale")).transaction_id for u in away
            }
            await until(
                statuses,
                lambda s: all(s[fresh[u]] == "success" for u in away),
                "fresh opens of the returned banks executed",
                60,
            )
            for u in away:
                assert devices[u].stats.outcomes["refused"] == 0, u
            figures["away_stale_dropped_by_broker"] = len(away)
        after = await probe.statuses()
        for u in away:
            assert tids[u] not in devices[u].executed, u
            assert final[tids[u]] == after[tids[u]] == "expired"
        for u in back:
            assert devices[u].executed.get(tids[u]) == 1, u
        outcomes = await probe.outcomes()
        for u in away:
            assert "CompartmentOpened" not in outcomes.get(tids[u], []), u
        for u in back:
            assert outcomes[tids[u]] == ["CompartmentOpened"], u
        figures["away_expired_never_executed"] = len(away)
        figures["back_executed_once"] = len(back)
    finally:
        print("figures:", json.dumps(figures))
        await fleet.stop()
        await runtime.stop()
        probe.close()
        service.close()
