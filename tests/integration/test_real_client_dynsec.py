"""The real upstream `locker-client` (unmodified) under AUTH_MODE=dynsec: `--headless` with
its embedded Mosquitto + dynamic-security plugin (`LOCKER_BROKER=mosquitto`), the client
with its relay-board stand-in. It provisions (its account created in the plugin, pinned to
the client id it registered with, which the client keeps), comes online, opens a door on
`open --wait`, and `bank revoke` from the CLI pushes it off the broker for good."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.support.dynsec import needs_dynsec
from tests.support.headless_instances import headless_instance
from tests.support.interop_stack import cli
from tests.support.mosquitto import free_port
from tests.support.real_client import (
    ClientBuild,
    RealClient,
    relay_board,
)
from tests.support.reliability_tools import SqlProbe
from tests.support.waiting import until

pytestmark = [pytest.mark.mosquitto, needs_dynsec, pytest.mark.timeout(420)]
PROVISIONING_PASSWORD = "prov-pass-dynsec"
INTERVAL = 2


async def test_the_real_client_under_dynsec(tmp_path: Path, client_build: ClientBuild) -> None:
    mqtt_port = free_port()
    backend = headless_instance(
        "dynsec-real",
        tmp_path / "backend",
        {
            "LOCKER_BROKER": "mosquitto",
            "MQTT_PORT": str(mqtt_port),
            "MQTT_PASSWORD": "backend-pass-dynsec",
            "MQTT_PROVISIONING_PASSWORD": PROVISIONING_PASSWORD,
            "DYNSEC_ADMIN_PASSWORD": "admin-pass-dynsec",
            "SECRET_KEY": "secret-key-dynsec-0123456789abcdef",
        },
    )
    env, cwd = backend.env, backend.workdir
    probe = SqlProbe(f"sqlite:///{tmp_path / 'backend' / 'data' / 'locker.db'}")

    async def status(uuid: str) -> str:
        rows = await probe.rows("SELECT status FROM locker_banks WHERE uuid = :u", u=uuid)
        return str(rows[0].status) if rows else "missing"

    async with aiohttp.ClientSession() as session:
        await backend.start()
        try:
            await backend.wait_healthy(session, 60)
            with relay_board(tmp_path / "board") as board:
                client = RealClient(
                    client_build,
                    tmp_path / "site",
                    board.port_path,
                    broker_url=f"mqtt://127.0.0.1:{mqtt_port}",
                    provisioning_user="provisioning_client",
                    provisioning_password=PROVISIONING_PASSWORD,
                    heartbeat_interval=INTERVAL,
                )
                try:
                    code, out = await cli(
                        env, cwd, "bank", "create", "--name", "Dynsec real",
                        "--mapping", "1:1:0,2:1:1", "--heartbeat-interval", str(INTERVAL),
                        "--json",
                    )  # fmt: skip
                    assert code == 0, out
                    created = json.loads(out)
                    uuid = created["uuid"]
                    client.start(token=created["token"])
                    await asyncio.to_thread(
                        client.wait_log, "Provisioning completed successfully", 40
                    )
                    await asyncio.to_thread(
                        client.wait_log, "MQTT reconnected with provisioned credentials", 20
                    )
                    await until(lambda: status(uuid), lambda s: s == "online", "online", 20)

                    code, out = await cli(env, cwd, "open", uuid, "1", "--wait", "--timeout", "30")
                    assert code == 0, out
                    await until(
                        lambda: asyncio.to_thread(board.flashes),
                        lambda f: f == [(1, 0)],
                        "relay 0 flashed once",
                        10,
                    )

                    code, out = await cli(env, cwd, "bank", "revoke", uuid, "--reason", "test")
                    assert code == 0, out
                    assert "not disabled yet" not in out  # the CLI reached the plugin itself
                    await asyncio.to_thread(client.wait_log, "Not authorized", 20)
                    assert await status(uuid) == "revoked"
                finally:
                    print(client.log_tail(30))
                    client.kill()
        finally:
            await backend.stop()
            probe.close()
            print(backend.log_tail(20))
