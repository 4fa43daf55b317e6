"""Issue 8, item 1: crash consistency.

A real `locker-console --headless` process (MQTT_HOST set, a private Mosquitto; the store
on SQLite in tmp, and again on PostgreSQL when TEST_DATABASE_URL is set) serves a
simulated fleet in the test process (device dedup on). While the test
requests one open per compartment, the backend is SIGKILLed at random points and
restarted, and the broker is restarted twice (persistence off: every session is lost, so
only the backend's re-ask recovers commands that were in flight). Afterwards every command
is terminal, no device executed a transaction twice, the store holds exactly one domain
outcome per transaction (see `outcome_sequence_ok`), and `locker-console projections
rebuild` reproduces the read models byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.device import DeviceOptions
from simulator.faults import Faults
from simulator.fleet import Fleet
from tests.support.headless_instances import headless_instance
from tests.support.mosquitto import MosquittoBroker
from tests.support.reliability_tools import (
    TERMINAL,
    SqlProbe,
    log,
    operator_service,
    outcome_sequence_ok,
    size,
)
from tests.support.scenario import dump_read_models
from tests.support.service_process import clean_env
from tests.support.settings import TEST_SECRETS_ENV
from tests.support.waiting import until

BANKS = size("crash_banks", 50, 250)
COMPARTMENTS = 4
OPENS = BANKS * COMPARTMENTS  # one per compartment: 200 at CI size, 1,000 full
KILLS = size("crash_kills", 10, 40)
BROKER_RESTARTS = 2
SEED = size("seed", 8, 8)
SECRETS = TEST_SECRETS_ENV

pytestmark = [pytest.mark.reliability, pytest.mark.mosquitto, pytest.mark.timeout(600)]


async def test_sigkills_and_broker_restarts_lose_nothing_and_do_nothing_twice(
    tmp_path: Path, mosquitto: MosquittoBroker, db_url: str
) -> None:
    rng = random.Random(SEED)
    settings = {
        "DATABASE_URL": db_url,
        "MQTT_HOST": mosquitto.host,
        "MQTT_PORT": str(mosquitto.port),
        "COMMAND_TIMEOUT": "120",
        "COMMAND_RETRY_AFTER": "4",
        "CONFIG_TTL": "600",
        **SECRETS,
    }
    backend = headless_instance("crash", tmp_path / "backend", settings)
    service = operator_service(tmp_path, db_url, mosquitto, command_timeout=120.0, config_ttl=600.0)
    await service.migrate()
    probe = SqlProbe(db_url)
    fleet = Fleet(
        mosquitto.host,
        mosquitto.port,
        state_dir=tmp_path / "sim",
        provisioning_password=SECRETS["MQTT_PROVISIONING_PASSWORD"],
        options=DeviceOptions(
            heartbeat_interval=5, compartments=COMPARTMENTS, door_dwell_seconds=None, durable=False
        ),
        faults=Faults(),
        connect_concurrency=16,
    )
    figures: dict[str, Any] = {
        "database": db_url.split(":", 1)[0],
        "banks": BANKS,
        "opens": OPENS,
    }
    session = aiohttp.ClientSession()
    try:
        await backend.start()
        await backend.wait_healthy(session, 60)
        created = [
            await service.create_bank(
                f"Bank {n:03d}", "Crash", COMPARTMENTS, heartbeat_interval_seconds=5
            )
            for n in range(BANKS)
        ]
        await fleet.start([c.token for c in created])
        await fleet.wait_until_online(120)
        await until(
            lambda: probe.scalar(
                "SELECT count(*) FROM locker_banks WHERE status='online' AND config_state='in_sync'"
            ),
            lambda n: n == BANKS,
            "every bank online and in sync",
            120,
        )
        log("fleet online")
        devices = {c.uuid: fleet.by_bank(c.uuid) for c in created}
        targets = [(c.uuid, n) for c in created for n in range(1, COMPARTMENTS + 1)]
        rng.shuffle(targets)
        tids: list[str] = []
        stop_chaos = asyncio.Event()

        async def request_all() -> None:
            # Spread the opens over the chaos: about 10 per second.
            for bank, number in targets:
                txn = await service.request_open(bank, number, actor="reliability")
                tids.append(txn.transaction_id)
                await asyncio.sleep(rng.uniform(0, 0.2))  # pacing, not waiting

        kills = restarts = 0
        kill_points: list[int] = []

        async def chaos() -> None:
            nonlocal kills, restarts
            restart_after = {KILLS // 3, (2 * KILLS) // 3}
            while kills < KILLS:
                await asyncio.sleep(rng.uniform(0.2, 2.0))  # a random kill point
                kill_points.append(len(tids))
                await backend.kill()
                kills += 1
                if kills in restart_after and restarts < BROKER_RESTARTS:
                    await asyncio.to_thread(mosquitto.restart)
                    restarts += 1
                await backend.start()
                await backend.wait_healthy(session, 60)
            stop_chaos.set()

        started = time.monotonic()
        await asyncio.gather(request_all(), chaos())
        figures["kills"] = kills
        figures["broker_restarts"] = restarts
        figures["requested_at_kills"] = kill_points
        log(f"chaos over after {time.monotonic() - started:.1f} s")
        assert len(set(tids)) == OPENS

        async def statuses() -> Counter[str]:
            current = await probe.statuses()
            return Counter(current.get(t, "missing") for t in tids)

        final = await until(
            statuses,
            lambda c: set(c) <= TERMINAL,
            "every command terminal",
            180,
            0.5,
        )
        figures["statuses"] = dict(final)
        figures["seconds_to_all_terminal"] = round(time.monotonic() - started, 1)

        # Exactly one domain outcome per transaction (precise rule in outcome_sequence_ok).
        outcomes = await probe.outcomes()
        bad = {t: outcomes.get(t, []) for t in tids if not outcome_sequence_ok(outcomes.get(t, []))}
        assert not bad, f"{len(bad)} transactions with a wrong outcome history: {bad}"
        figures["outcome_events"] = sum(len(outcomes[t]) for t in tids)

        # No device executed a transaction twice; every success was executed exactly once.
        executed: Counter[str] = Counter()
        for device in devices.values():
            assert device is not None
            for tid, count in device.executed.items():
                executed[tid] += count
        twice = {t: n for t, n in executed.items() if n > 1}
        assert not twice, f"executed more than once: {twice}"
        current = await probe.statuses()
        for tid in tids:
            if current[tid] == "success":
                assert executed[tid] == 1, (tid, executed[tid])
        # Issue 15: every door the devices opened is recorded as opened (the re-ask after
        # each restart recovers answers lost with the killed process): 0 mismatches.
        mismatches = {
            tid: current[tid]
            for tid in tids
            if executed[tid] and "CompartmentOpened" not in outcomes.get(tid, [])
        }
        figures["mismatches_device_vs_store"] = len(mismatches)
        assert not mismatches, f"opened by the device, not recorded as opened: {mismatches}"
        figures["executed"] = sum(executed[t] for t in tids)
        figures["duplicates_recorded"] = int(
            await probe.scalar("SELECT coalesce(sum(duplicate_count),0) FROM command_transactions")
        )
        figures["sends"] = int(
            await probe.scalar("SELECT coalesce(sum(attempts),0) FROM command_transactions")
        )

        # Quiesce (backend and devices down), then a rebuild must give the same bytes.
        await fleet.stop()
        assert await backend.stop() is not None
        before = await dump_read_models(service)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "console.cli",
            "projections",
            "rebuild",
            cwd=tmp_path,
            env=clean_env(
                DATABASE_URL=db_url,
                LOCKER_DATA_DIR=str(tmp_path / "backend" / "data"),
                MQTT_HOST=mosquitto.host,
                **SECRETS,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        after = await dump_read_models(service)
        assert after == before, "projections rebuild changed the read models"
        figures["rebuild"] = out.decode().strip()
    finally:
        print("figures:", json.dumps(figures))
        await fleet.stop()
        await backend.stop()
        await session.close()
        probe.close()
        service.close()
        print(f"--- backend log\n{backend.log_tail(20)}")
