"""The interoperability stack of the real-client tests: `locker-console --headless`
with the embedded broker or a private Mosquitto running the real go-auth plugin, the
upstream locker-client (unmodified) on a relay board stand-in, optionally through a TCP
proxy the test controls, and the operator's CLI against the same store.

    async with interop_stack(tmp_path, client_build, "embedded", name="interop") as (stack, _):
        code, out = await stack.cli("bank", "create", ...)

(`client_build` is a fixture of tests/integration/conftest.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.goauth_broker import goauth_available, run_goauth_mosquitto
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.mosquitto import free_port
from tests.support.real_client import ClientBuild, RealClient, RelayBoard, relay_board
from tests.support.reliability_tools import SqlProbe
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

PROVISIONING_PASSWORD = "prov-pass-interop"
BACKEND_PASSWORD = "backend-pass-interop"
MOSQ_SECRET = "mosq-secret-interop"
SECRET_KEY = "secret-key-interop-0123456789abcdef"
INTERVAL = 2  # the bank's heartbeat interval (seconds)
MAPPING = "1:1:0,2:1:1,3:1:2,4:1:3"

# Both brokers a stack runs with: the embedded one, and Mosquitto + go-auth (when present).
BROKERS = [
    "embedded",
    pytest.param(
        "mosquitto",
        marks=[
            pytest.mark.mosquitto,
            pytest.mark.skipif(not goauth_available(), reason="mosquitto or go-auth.so missing"),
        ],
    ),
]


async def cli(env: Mapping[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """`locker-console ARGS` as the operator types it (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console.cli",
        *args,
        cwd=cwd,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


@dataclass
class Stack:
    """The backend, its store, the board and the client of one run."""

    tmp: Path
    backend: HeadlessInstance
    env: dict[str, str]
    probe: SqlProbe
    board: RelayBoard
    client: RealClient
    figures: dict[str, Any] = field(default_factory=dict)

    async def cli(self, *args: str) -> tuple[int, str]:
        """`locker-console ARGS` as the operator types it, against the same store."""
        return await cli(self.env, self.backend.workdir, *args)

    async def bank(self, uuid: str) -> Any:
        rows = await self.probe.rows(
            "SELECT status, config_state, dialect, applied_config_hash, desired_config_hash "
            "FROM locker_banks WHERE uuid = :u",
            u=uuid,
        )
        return rows[0]

    async def doors(self, uuid: str) -> dict[int, str]:
        rows = await self.probe.rows(
            "SELECT number, door_state FROM compartments WHERE bank_uuid = :u", u=uuid
        )
        return {r.number: r.door_state for r in rows}

    async def txns(self, uuid: str, action: str) -> list[Any]:
        return await self.probe.rows(
            "SELECT transaction_id, status, error_code, message FROM command_transactions "
            "WHERE locker_uuid = :u AND action = :a ORDER BY requested_at",
            u=uuid,
            a=action,
        )

    async def until_bank(self, uuid: str, what: str, done: Any, timeout: float) -> float:
        """Seconds until the bank row satisfies `done`."""
        start = time.monotonic()
        await until(lambda: self.bank(uuid), done, what, timeout, interval=0.05)
        return round(time.monotonic() - start, 2)

    def flashes(self, relay: int) -> int:
        return sum(1 for _slave, r in self.board.flashes() if r == relay)


@asynccontextmanager
async def interop_stack(
    tmp: Path,
    build: ClientBuild,
    broker: str,
    *,
    name: str,
    timings: Mapping[str, str],
    through_proxy: bool = False,
) -> AsyncIterator[tuple[Stack, TcpProxy | None]]:
    """The stack of one run on `broker` ("embedded" or "mosquitto"), with the backend's
    `timings` (COMMAND_TIMEOUT, ...); with `through_proxy` the client reaches the broker
    through a TcpProxy the test can cut. Prints the logs when the run fails."""
    settings = {
        "MQTT_PORT": str(free_port()),
        "MQTT_PASSWORD": BACKEND_PASSWORD,
        "MQTT_PROVISIONING_PASSWORD": PROVISIONING_PASSWORD,
        "MOSQ_SECRET": MOSQ_SECRET,
        "SECRET_KEY": SECRET_KEY,
        **timings,
    }
    if broker == "mosquitto":
        settings["MQTT_HOST"] = "127.0.0.1"
    instance = headless_instance(f"{name}-{broker}", tmp / "backend", settings)
    env = dict(instance.env)
    broker_cm: Any = (
        run_goauth_mosquitto(tmp / "mosquitto", hook_port=instance.http_port, secret=MOSQ_SECRET)
        if broker == "mosquitto"
        else contextlib.nullcontext()
    )
    async with aiohttp.ClientSession() as session:
        with broker_cm as running_broker:
            if running_broker is not None:
                env["MQTT_PORT"] = instance.env["MQTT_PORT"] = str(running_broker.port)
            await instance.start()
            try:
                await instance.wait_healthy(session, 60)
                broker_port = int(instance.env["MQTT_PORT"])
                proxy_cm: Any = (
                    TcpProxy("127.0.0.1", broker_port)
                    if through_proxy
                    else contextlib.nullcontext()
                )
                async with proxy_cm as proxy:
                    client_port = proxy.port if proxy is not None else broker_port
                    with relay_board(tmp / "board") as board:
                        client = RealClient(
                            build,
                            tmp / "site",
                            board.port_path,
                            broker_url=f"mqtt://127.0.0.1:{client_port}",
                            provisioning_user="provisioning_client",
                            provisioning_password=PROVISIONING_PASSWORD,
                            heartbeat_interval=INTERVAL,
                        )
                        probe = SqlProbe(f"sqlite:///{instance.workdir / 'data' / 'locker.db'}")
                        stack = Stack(tmp, instance, env, probe, board, client)
                        try:
                            yield stack, proxy
                        except BaseException:
                            print("---- client log ----\n" + client.log_tail(80))
                            print("---- backend log ----\n" + instance.log_tail(60))
                            print("---- board log ----\n" + board.log_text()[-3000:])
                            raise
                        finally:
                            client.kill()
                            probe.close()
            finally:
                await instance.stop()
