"""The real upstream locker-client, unmodified, end to end (issue 13, DESIGN 3.1).

`node dist/app.js` built from `../shared/peer/locker-client` drives
`../shared/peer/modbus_board.py` on a pty and talks to `locker-console --headless`: once
with the embedded broker, once through a private Mosquitto running the real go-auth
plugin in front of our hook. The operator's side is the CLI, as a person would type it;
relay flashes are counted from the board's own log. Each run prints its figures (time to
online, flashes, exit codes, time to offline after SIGKILL, ...) as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.goauth_broker import goauth_available, run_goauth_mosquitto
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.mosquitto import free_port
from tests.support.real_client import (
    ClientBuild,
    RealClient,
    RelayBoard,
    build_client,
    relay_board,
    require_node,
)
from tests.support.reliability_tools import SqlProbe
from tests.support.waiting import until

pytestmark = [pytest.mark.timeout(420)]

PROVISIONING_PASSWORD = "prov-pass-interop"
BACKEND_PASSWORD = "backend-pass-interop"
MOSQ_SECRET = "mosq-secret-interop"
SECRET_KEY = "secret-key-interop-0123456789abcdef"
INTERVAL = 2  # the bank's heartbeat interval (seconds)
MAPPING = "1:1:0,2:1:1,3:1:2,4:1:3"


@pytest.fixture(scope="session")
def client_build() -> ClientBuild:
    """npm ci && npx tsc once per session (and cached on disk across sessions)."""
    require_node()
    return build_client()


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
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "console.cli",
            *args,
            cwd=self.backend.workdir,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode(errors="replace")

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


def _backend_env(tmp: Path, broker: str, mqtt_port: int) -> dict[str, str]:
    settings = {
        "MQTT_PORT": str(mqtt_port),
        "MQTT_PASSWORD": BACKEND_PASSWORD,
        "MQTT_PROVISIONING_PASSWORD": PROVISIONING_PASSWORD,
        "MOSQ_SECRET": MOSQ_SECRET,
        "SECRET_KEY": SECRET_KEY,
        "COMMAND_TIMEOUT": "30",
        "COMMAND_RETRY_AFTER": "10",
    }
    if broker == "mosquitto":
        settings["MQTT_HOST"] = "127.0.0.1"
    return settings


@asynccontextmanager
async def _stack(tmp: Path, build: ClientBuild, broker: str) -> AsyncIterator[Stack]:
    mqtt_port = free_port()
    instance = headless_instance(
        f"interop-{broker}", tmp / "backend", _backend_env(tmp, broker, mqtt_port)
    )
    env = dict(instance.env)
    async with aiohttp.ClientSession() as session:
        if broker == "mosquitto":
            mosquitto = run_goauth_mosquitto(
                tmp / "mosquitto", hook_port=instance.http_port, secret=MOSQ_SECRET
            )
            broker_cm: Any = mosquitto
        else:
            broker_cm = _nothing()
        with broker_cm as running_broker:
            if running_broker is not None:
                env["MQTT_PORT"] = instance.env["MQTT_PORT"] = str(running_broker.port)
            await instance.start()
            try:
                await instance.wait_healthy(session, 60)
                port = instance.env["MQTT_PORT"]
                with relay_board(tmp / "board") as board:
                    client = RealClient(
                        build,
                        tmp / "site",
                        board.port_path,
                        broker_url=f"mqtt://127.0.0.1:{port}",
                        provisioning_user="provisioning_client",
                        provisioning_password=PROVISIONING_PASSWORD,
                        heartbeat_interval=INTERVAL,
                    )
                    probe = SqlProbe(f"sqlite:///{instance.workdir / 'data' / 'locker.db'}")
                    stack = Stack(tmp, instance, env, probe, board, client)
                    try:
                        yield stack
                    except BaseException:
                        print("---- client log ----\n" + client.log_tail(60))
                        print("---- backend log ----\n" + instance.log_tail(60))
                        print("---- board log ----\n" + board.log_text()[-3000:])
                        raise
                    finally:
                        client.kill()
                        probe.close()
            finally:
                await instance.stop()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def _restart_backend(stack: Stack) -> None:
    code = await stack.backend.stop()
    assert code == 0, f"backend exit code {code}:\n{stack.backend.log_tail()}"
    await stack.backend.start()
    async with aiohttp.ClientSession() as session:
        await stack.backend.wait_healthy(session, 60)


@pytest.mark.parametrize(
    "broker",
    [
        "embedded",
        pytest.param(
            "mosquitto",
            marks=[
                pytest.mark.mosquitto,
                pytest.mark.skipif(
                    not goauth_available(), reason="mosquitto or go-auth.so missing"
                ),
            ],
        ),
    ],
)
async def test_the_real_client_end_to_end(
    tmp_path: Path, client_build: ClientBuild, broker: str
) -> None:
    async with _stack(tmp_path, client_build, broker) as stack:
        figures = stack.figures
        client = stack.client
        figures["broker"] = broker
        figures["config_stand_in"] = client_build.stand_in_config

        # -- register with token: client stores credentials, reconnects as the bank -------
        code, out = await stack.cli(
            "bank", "create", "--name", f"Interop {broker}", "--mapping", MAPPING,
            "--heartbeat-interval", str(INTERVAL), "--json",
        )  # fmt: skip
        assert code == 0, out
        created = json.loads(out)
        uuid, token = created["uuid"], created["token"]
        assert created["dialect"] == "auto"
        client.start(token=token)
        await asyncio.to_thread(client.wait_log, "Provisioning completed successfully", 40)
        assert (client.credentials() or {}).get("username") == uuid
        await asyncio.to_thread(
            client.wait_log, "MQTT reconnected with provisioned credentials", 20
        )
        connected = time.monotonic()

        # -- heartbeats: online within 2 intervals; snapshot shows door states -----------
        await stack.until_bank(uuid, "online", lambda b: b.status == "online", 4 * INTERVAL)
        figures["online_after_connect_s"] = round(time.monotonic() - connected, 2)
        assert figures["online_after_connect_s"] <= 2 * INTERVAL
        bank = await stack.bank(uuid)
        assert bank.dialect == "openlocker", "decided by the registration's form"
        await stack.until_bank(uuid, "config in sync", lambda b: b.config_state == "in_sync", 20)
        await until(
            lambda: stack.doors(uuid),
            lambda d: d == {1: "closed", 2: "closed", 3: "closed", 4: "closed"},
            "door snapshot",
            20,
        )
        figures["doors_from_snapshot"] = await stack.doors(uuid)

        # -- open UUID 1 --wait: relay flashed once, exit 0, transaction success ---------
        code, out = await stack.cli("open", uuid, "1", "--wait", "--timeout", "30")
        figures["open_exit_code"] = code
        assert code == 0, out
        await asyncio.to_thread(_settle, stack, 1)
        figures["open_flashes_relay0"] = stack.flashes(0)
        assert stack.board.flashes() == [(1, 0)], stack.board.log_text()
        (opened,) = await stack.txns(uuid, "open_compartment")
        assert opened.status == "success"
        assert opened.message == "Compartment 1 opened successfully."  # the client's words

        # -- config push: applied, in sync, no re-push on reconnect ------------------------
        code, out = await stack.cli("config", "push", uuid, "--json")
        assert code == 0, out
        pushed = json.loads(out)["transaction_id"]
        await until(
            lambda: stack.txns(uuid, "apply_config"),
            lambda rows: any(r.transaction_id == pushed and r.status == "success" for r in rows),
            "config push answered",
            20,
        )
        assert (await stack.bank(uuid)).config_state == "in_sync"
        pushes_before = len(await stack.txns(uuid, "apply_config"))
        assert client.stop() == 0  # graceful: no last will
        client.start()
        await asyncio.to_thread(client.wait_log, "MQTT connection established", 20)
        await asyncio.to_thread(client.wait_log, "Heartbeat sent", 20)
        await stack.until_bank(uuid, "online again", lambda b: b.status == "online", 4 * INTERVAL)
        figures["config_pushes_before_after_reconnect"] = [
            pushes_before,
            len(await stack.txns(uuid, "apply_config")),
        ]
        assert figures["config_pushes_before_after_reconnect"][1] == pushes_before

        # -- SIGKILL the client: offline (last will) within 1 s; restart: online ----------
        killed = time.monotonic()
        figures["sigkill_exit_code"] = client.kill()
        assert figures["sigkill_exit_code"] == -signal.SIGKILL
        await stack.until_bank(uuid, "offline", lambda b: b.status == "offline", 5)
        figures["offline_after_sigkill_s"] = round(time.monotonic() - killed, 2)
        assert figures["offline_after_sigkill_s"] <= 1.0
        started = time.monotonic()
        client.start()
        await stack.until_bank(uuid, "online after restart", lambda b: b.status == "online", 20)
        figures["online_after_restart_s"] = round(time.monotonic() - started, 2)

        # -- client SIGKILLed, open, client restarted within the TTL: exactly once --------
        client.kill()
        await stack.until_bank(uuid, "offline", lambda b: b.status == "offline", 5)
        code, out = await stack.cli("open", uuid, "2", "--json")
        assert code == 0, out
        queued = json.loads(out)["transaction_id"]
        await until(
            lambda: stack.txns(uuid, "open_compartment"),
            lambda rows: any(r.transaction_id == queued and r.status == "sent" for r in rows),
            "open sent to the broker",
            20,
        )
        client.start()
        await until(
            lambda: stack.txns(uuid, "open_compartment"),
            lambda rows: any(r.transaction_id == queued and r.status == "success" for r in rows),
            "queued open executed",
            40,
        )
        await asyncio.to_thread(_settle, stack, 2)
        figures["queued_open_flashes_relay1"] = stack.flashes(1)
        assert stack.flashes(1) == 1, stack.board.log_text()

        # -- backend restarted while the client stays up: next open succeeds -------------
        await _restart_backend(stack)
        assert client.running
        code, out = await stack.cli("open", uuid, "3", "--wait", "--timeout", "40")
        figures["open_after_backend_restart_exit_code"] = code
        assert code == 0, out
        await asyncio.to_thread(_settle, stack, 3)
        assert stack.flashes(2) == 1, stack.board.log_text()

        # -- a door the board cannot drive: the client's own error code --------------------
        code, out = await stack.cli(
            "bank", "update", uuid, "--mapping", MAPPING + ",9:1:8", "--json"
        )
        assert code == 0, out
        refused = await until(
            lambda: stack.txns(uuid, "apply_config"),
            lambda rows: rows[-1].status == "error",
            "config with relay 8 refused by the client",
            20,
        )
        figures["unreachable_config_error"] = [refused[-1].status, refused[-1].error_code]
        assert refused[-1].error_code == "INVALID_CONFIG"
        code, out = await stack.cli("open", uuid, "9", "--wait", "--timeout", "30")
        figures["unreachable_open_exit_code"] = code
        assert code == 3, out  # `open --wait`: 3 = the device answered an error (issue 15)
        last = (await stack.txns(uuid, "open_compartment"))[-1]
        figures["unreachable_open"] = [last.status, last.error_code]
        assert last.status == "error" and last.error_code, last
        assert len(stack.board.flashes()) == 3, "nothing else was flashed"

        figures["flashes_total"] = len(stack.board.flashes())
        print("INTEROP " + json.dumps(figures, sort_keys=True))


def _settle(stack: Stack, expected: int) -> None:
    """Until the board has executed `expected` flashes (it logs each as it executes it)."""
    deadline = time.monotonic() + 10
    while len(stack.board.flashes()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition with a deadline
