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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.support.interop_stack import (
    BROKERS,
    INTERVAL,
    MAPPING,
    Stack,
    interop_stack,
)
from tests.support.real_client import ClientBuild
from tests.support.waiting import until

pytestmark = [pytest.mark.timeout(420)]


@asynccontextmanager
async def _stack(tmp: Path, build: ClientBuild, broker: str) -> AsyncIterator[Stack]:
    timings = {"COMMAND_TIMEOUT": "30", "COMMAND_RETRY_AFTER": "10"}
    async with interop_stack(tmp, build, broker, name="interop", timings=timings) as (stack, _):
        yield stack


async def _restart_backend(stack: Stack) -> None:
    code = await stack.backend.stop()
    assert code == 0, f"backend exit code {code}:\n{stack.backend.log_tail()}"
    await stack.backend.start()
    async with aiohttp.ClientSession() as session:
        await stack.backend.wait_healthy(session, 60)


@pytest.mark.parametrize("broker", BROKERS)
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
