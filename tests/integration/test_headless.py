"""`locker-console --headless` end to end as a real process: embedded broker, auth hook,
HTTP API, MQTT runtime; a simulated device provisions through the real flow and the CLI
opens a compartment. Also proves the headless process never imports Textual."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from simulator.device import DeviceOptions
from simulator.fleet import Fleet
from tests.support.mosquitto import free_port


def _env(tmp_path: Path, mqtt_port: int, http_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "DATABASE_", "HTTP_"))}
    env.update(
        LOCKER_DATA_DIR=str(tmp_path / "data"),
        MQTT_PORT=str(mqtt_port),
        HTTP_PORT=str(http_port),
        COMMAND_TIMEOUT="20",
    )
    return env


async def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console.cli",
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def _until_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float) -> dict:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, "headless process exited early"
            try:
                async with session.get(f"{url}/healthz") as resp:
                    body = await resp.json()
                    if resp.status == 200:
                        return body
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture
async def headless(
    tmp_path: Path,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str], str]]:
    mqtt_port, http_port = free_port(), free_port()
    env = _env(tmp_path, mqtt_port, http_port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "console.cli",
        "--headless",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        yield proc, env, url
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_headless_serves_a_device_end_to_end(
    tmp_path: Path, headless: tuple[asyncio.subprocess.Process, dict[str, str], str]
) -> None:
    proc, env, url = headless
    health = await _until_healthy(url, proc, 60)
    assert health["database"]["ok"] is True or health.get("status") == "ok"

    code, out, err = await _cli(
        tmp_path, env, "bank", "create", "--name", "E2E", "--compartments", "3", "--json"
    )
    assert code == 0, err
    bank = json.loads(out)
    secrets = json.loads((tmp_path / "data" / "secrets.json").read_text())
    fleet = Fleet(
        "127.0.0.1",
        int(env["MQTT_PORT"]),
        state_dir=tmp_path / "sim",
        provisioning_password=secrets["mqtt_provisioning_password"],
        options=DeviceOptions(heartbeat_interval=1.0, door_dwell_seconds=0.5),
    )
    try:
        (device,) = await fleet.start([bank["token"]])
        await device.wait_until_online(30)
        assert device.bank_uuid == bank["uuid"]

        async def shown() -> dict:
            code, out, err = await _cli(tmp_path, env, "bank", "show", bank["uuid"], "--json")
            assert code == 0, err
            return json.loads(out)

        async with asyncio.timeout(30):
            while (await shown())["status"] != "online":  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.2)

        code, out, err = await _cli(tmp_path, env, "open", bank["uuid"], "2", "--wait", "--json")
        assert code == 0, (out, err)
        txn = json.loads(out)
        assert txn["status"] == "success"
        assert device.executed[txn["transaction_id"]] == 1
        assert set(device.executed.values()) == {1}  # apply_config and the open, once each
    finally:
        await fleet.stop()

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert proc.stderr is not None
    imported = (await proc.stderr.read()).decode()
    assert "backend.runner" in imported  # the importtime trace is there ...
    textual = [
        line
        for line in imported.splitlines()
        if line.rstrip().endswith((" textual", "textual.app"))
    ]
    assert textual == []  # ... and Textual is not in it


async def test_headless_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    http_port = free_port()
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = blocker.sockets[0].getsockname()[1]
    try:
        env = _env(tmp_path, busy, http_port)
        code, _, err = await _cli(tmp_path, env, "--headless")
        assert code == 1
        assert err.strip().splitlines() == [
            f"error: MQTT port {busy} on 127.0.0.1 is already in use; set MQTT_HOST to use an "
            "external broker or MQTT_PORT to pick another port"
        ]
    finally:
        blocker.close()
        await blocker.wait_closed()
