"""`simulate --dialect openlocker` against the real backend: the simulated device speaks
the upstream client's contract, the bank is decided `openlocker` by its registration, and
config and opens go through in that dialect (the real client itself: test_real_client.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from simulator.device import DeviceOptions
from simulator.fleet import Fleet
from tests.support.headless_instances import headless_instance
from tests.support.mosquitto import free_port

PROVISIONING_PASSWORD = "prov-pass-sim"


async def _cli(workdir: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console.cli", *args, cwd=workdir, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


@pytest.mark.parametrize("dialect", ["seed", "openlocker"])
async def test_a_simulated_device_of_each_dialect_is_served_in_its_dialect(
    tmp_path: Path, dialect: str
) -> None:
    instance = headless_instance(
        f"sim-{dialect}",
        tmp_path / "backend",
        {
            "MQTT_PORT": str(free_port()),
            "MQTT_PASSWORD": "backend-pass-sim",
            "MQTT_PROVISIONING_PASSWORD": PROVISIONING_PASSWORD,
            "MOSQ_SECRET": "mosq-secret-sim",
            "SECRET_KEY": "secret-key-sim-0123456789abcdef",
        },
    )
    await instance.start()
    try:
        async with aiohttp.ClientSession() as session:
            await instance.wait_healthy(session, 60)
        workdir, env = instance.workdir, instance.env
        code, out = await _cli(
            workdir, env, "bank", "create", "--name", "Sim", "--compartments", "3", "--json"
        )
        assert code == 0, out
        bank = json.loads(out)
        fleet = Fleet(
            "127.0.0.1",
            int(env["MQTT_PORT"]),
            state_dir=tmp_path / "sim",
            provisioning_password=PROVISIONING_PASSWORD,
            options=DeviceOptions(
                heartbeat_interval=1.0, door_dwell_seconds=0.5, upstream=dialect == "openlocker"
            ),
        )
        try:
            (device,) = await fleet.start([bank["token"]])
            await device.wait_until_online(30)

            async def shown() -> dict:
                code, out = await _cli(workdir, env, "bank", "show", bank["uuid"], "--json")
                assert code == 0, out
                return json.loads(out)

            async with asyncio.timeout(30):
                while (view := await shown())["config_state"] != "in_sync":  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # another process's store: poll with a deadline
            assert view["dialect"] == dialect, "decided by the registration's form"
            code, out = await _cli(workdir, env, "open", bank["uuid"], "2", "--wait", "--json")
            assert code == 0, out
            txn = json.loads(out)
            assert txn["status"] == "success"
            assert device.executed[txn["transaction_id"]] == 1
        finally:
            await fleet.stop()
    finally:
        await instance.stop()
