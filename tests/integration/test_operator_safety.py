"""Issue 15, must show: a door the console reports as expired never opens.

The real upstream client (`../shared/peer/locker-client`, unmodified, via
tests/support/real_client.py) drives the Modbus board stand-in and reaches the broker
through a TCP proxy the test controls (tests/support/tcp_proxy.py). With the embedded broker
and with Mosquitto + the real go-auth plugin:

1. the link is cut (the client process keeps running and keeps trying), an open is
   requested, the link is restored only after the open has expired: the relay board never
   flashes for it and the transaction stays `expired` (the client ignores `expires_at`: only
   the broker hops protect it: the embedded broker's own expiry, Mosquitto's Message Expiry
   Interval);
2. the link is cut, an open is requested and the link restored inside the TTL: exactly one
   flash, `success`.

The operator's side is the CLI, as typed; flashes are read from the board's own log.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.interop_stack import BROKERS, INTERVAL, MAPPING, Stack, interop_stack
from tests.support.real_client import ClientBuild
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

pytestmark = [pytest.mark.timeout(300)]
OPEN_TTL = 8  # COMMAND_TIMEOUT; an open expires when it times out


@asynccontextmanager
async def _stack(
    tmp: Path, build: ClientBuild, broker: str
) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    timings = {"COMMAND_TIMEOUT": str(OPEN_TTL), "COMMAND_RETRY_AFTER": "60"}
    async with interop_stack(
        tmp, build, broker, name="safety", timings=timings, through_proxy=True
    ) as (stack, proxy):
        assert proxy is not None
        try:
            yield stack, proxy
        finally:
            print("figures:", json.dumps(stack.figures))


async def _status(stack: Stack, uuid: str, tid: str) -> str:
    rows = await stack.txns(uuid, "open_compartment")
    return next((r.status for r in rows if r.transaction_id == tid), "missing")


async def _outcomes(stack: Stack, tid: str) -> list[str]:
    rows = await stack.probe.rows(
        "SELECT event_type FROM stored_events WHERE payload LIKE :t ORDER BY id", t=f"%{tid}%"
    )
    return [r.event_type for r in rows]


@pytest.mark.parametrize("broker", BROKERS)
async def test_link_cut_open_expires_never_flashes_inside_ttl_flashes_once(
    tmp_path: Path, client_build: ClientBuild, broker: str
) -> None:
    async with _stack(tmp_path, client_build, broker) as (stack, proxy):
        figures = stack.figures
        figures["broker"] = broker
        figures["open_ttl"] = OPEN_TTL
        code, out = await stack.cli(
            "bank", "create", "--name", f"Safety {broker}", "--mapping", MAPPING,
            "--heartbeat-interval", str(INTERVAL), "--json",
        )  # fmt: skip
        assert code == 0, out
        created = json.loads(out)
        uuid = created["uuid"]
        stack.client.start(token=created["token"])
        await stack.until_bank(uuid, "online", lambda b: b.status == "online", 60)
        await stack.until_bank(uuid, "config in sync", lambda b: b.config_state == "in_sync", 30)

        # -- 1. cut, open, restore after the TTL: no flash, stays expired ------------------
        await proxy.cut()
        figures["offline_after_cut_s"] = await stack.until_bank(
            uuid, "offline after the cut", lambda b: b.status == "offline", 30
        )
        code, out = await stack.cli("open", uuid, "1", "--json")
        assert code == 0, out
        answer = json.loads(out)
        assert "offline" in answer["warning"] and "expires" in answer["warning"]
        stale = answer["transaction_id"]
        started = time.monotonic()
        await until(lambda: _status(stack, uuid, stale), lambda s: s == "expired", "expired", 30)
        figures["expired_after_s"] = round(time.monotonic() - started, 1)
        assert stack.client.running  # the client kept running all along
        proxy.restore()
        await stack.until_bank(uuid, "online after the restore", lambda b: b.status == "online", 30)
        # A fresh open after the restore arrives (same session, in order) and flashes relay 1:
        # anything still queued for the stale one would have come first.
        code, out = await stack.cli("open", uuid, "2", "--wait", "--timeout", "30")
        assert code == 0, out
        assert stack.flashes(1) == 1, stack.board.log_text()
        assert stack.flashes(0) == 0, stack.board.log_text()  # compartment 1: never
        assert await _status(stack, uuid, stale) == "expired"
        assert "CompartmentOpened" not in await _outcomes(stack, stale)
        figures["stale_flashes"] = stack.flashes(0)
        figures["stale_reached_client"] = stale in stack.client.log_text()
        figures["dropped_by_embedded_broker"] = "dropped by the broker" in stack.backend.log_tail(
            500
        )
        assert not figures["stale_reached_client"]  # not refused by it: never delivered
        if broker == "embedded":  # it was queued in the client's session, and dropped there
            assert figures["dropped_by_embedded_broker"], stack.backend.log_tail(100)

        # -- 2. cut, open, restore inside the TTL: exactly one flash ----------------------
        await proxy.cut()
        await stack.until_bank(uuid, "offline again", lambda b: b.status == "offline", 30)
        code, out = await stack.cli("open", uuid, "3", "--json")
        assert code == 0, out
        inside = json.loads(out)["transaction_id"]
        await until(
            lambda: _status(stack, uuid, inside),
            lambda s: s in ("sent", "success"),
            "published into the broker",
            OPEN_TTL / 2,
            interval=0.05,
        )
        proxy.restore()
        await until(lambda: _status(stack, uuid, inside), lambda s: s == "success", "opened", 30)
        code, out = await stack.cli("open", uuid, "4", "--wait", "--timeout", "30")
        assert code == 0, out  # a later command done: nothing of `inside` is still on its way
        assert stack.flashes(2) == 1, stack.board.log_text()
        assert (await _outcomes(stack, inside)).count("CompartmentOpened") == 1
        figures["inside_ttl_flashes"] = stack.flashes(2)
