"""Issue 8, item 6: resource limits.

1. The outbox during a broker outage: a real `--headless` backend (Mosquitto, SQLite) and
   a simulated fleet; Mosquitto is stopped while the test requests 10 opens per second
   (CI: 20 s, full: 10 minutes). The backend's RSS is sampled every second and must stay
   bounded; after the broker returns every command is delivered and executed once (or,
   past its TTL, expired and never executed).
2. `processed_messages` and `rejected_messages` are pruned by `devices.prune()` once the
   (frozen) clock has moved past their TTLs.
Logs: the TUI logs to a RotatingFileHandler (console/logging_setup.py); headless logs to
stderr and leaves rotation to systemd/supervisor (see RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backend.device_service import DEDUP_TTL
from backend.domain.contract import DeviceEvent
from backend.domain.outcomes import Outcome
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from simulator.device import DeviceOptions
from simulator.fleet import Fleet
from tests.support.headless_instances import headless_instance
from tests.support.mosquitto import MosquittoBroker
from tests.support.reliability_tools import TERMINAL, SqlProbe, log, operator_service, size
from tests.support.settings import TEST_SECRETS_ENV, make_settings
from tests.support.waiting import until

OUTAGE = size("outage_seconds", 20, 600)
RATE = 10  # commands per second
COMPARTMENTS = 10
BANKS = max(1, OUTAGE * RATE // COMPARTMENTS)
RSS_GROWTH_LIMIT_MB = 64
SECRETS = TEST_SECRETS_ENV

pytestmark = [pytest.mark.reliability]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.mosquitto
@pytest.mark.timeout(OUTAGE * 3 + 300)
async def test_outbox_during_a_broker_outage_is_bounded_and_delivered(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    db_url = f"sqlite:///{tmp_path / 'locker.db'}"
    settings = {
        "DATABASE_URL": db_url,
        "MQTT_HOST": mosquitto.host,
        "MQTT_PORT": str(mosquitto.port),
        "COMMAND_TIMEOUT": str(OUTAGE * 2 + 120),
        "COMMAND_RETRY_AFTER": "30",
        "CONFIG_TTL": str(OUTAGE * 2 + 120),
        **SECRETS,
    }
    backend = headless_instance("outage", tmp_path / "backend", settings)
    service = operator_service(tmp_path, db_url, mosquitto, command_timeout=float(OUTAGE * 2 + 120))
    await service.migrate()
    probe = SqlProbe(db_url)
    fleet = Fleet(
        mosquitto.host,
        mosquitto.port,
        state_dir=tmp_path / "sim",
        provisioning_password=SECRETS["MQTT_PROVISIONING_PASSWORD"],
        options=DeviceOptions(
            heartbeat_interval=10,
            compartments=COMPARTMENTS,
            door_dwell_seconds=None,
            durable=False,
            reconnect_max_seconds=2.0,
        ),
        connect_concurrency=16,
    )
    figures: dict[str, Any] = {"outage_seconds": OUTAGE, "rate_per_second": RATE}
    session = aiohttp.ClientSession()
    try:
        await backend.start()
        await backend.wait_healthy(session, 60)
        created = [
            await service.create_bank(
                f"Outage {n:03d}", "Lab", COMPARTMENTS, heartbeat_interval_seconds=10
            )
            for n in range(BANKS)
        ]
        await fleet.start([c.token for c in created])
        await fleet.wait_until_online(120)
        await until(
            lambda: probe.scalar("SELECT count(*) FROM locker_banks WHERE config_state='in_sync'"),
            lambda n: n == BANKS,
            "configs applied",
            120,
        )
        assert backend.process is not None
        pid = backend.process.pid
        baseline = rss_mb(pid)
        targets = [(c.uuid, n) for n in range(1, COMPARTMENTS + 1) for c in created]
        random.Random(3).shuffle(targets)
        log("broker down")
        mosquitto.stop()
        tids: list[str] = []
        samples: list[float] = []
        started = time.monotonic()
        for i, (bank, number) in enumerate(targets[: OUTAGE * RATE]):
            tids.append((await service.request_open(bank, number, actor="outage")).transaction_id)
            if i % RATE == 0:
                samples.append(rss_mb(pid))
            # Pacing to 10 commands per second of wall time.
            await asyncio.sleep(max(0.0, started + (i + 1) / RATE - time.monotonic()))
        figures["commands_during_outage"] = len(tids)
        pending = await probe.scalar("SELECT count(*) FROM outbox WHERE status='pending'")
        figures["outbox_pending_at_end_of_outage"] = int(pending)
        log("broker up")
        await asyncio.to_thread(mosquitto.restart)

        async def statuses() -> Counter[str]:
            current = await probe.statuses()
            return Counter(current.get(t, "missing") for t in tids)

        final = await until(statuses, lambda c: set(c) <= TERMINAL, "all terminal", 300, 0.5)
        samples.append(rss_mb(pid))
        figures["statuses"] = dict(final)
        figures["rss_mb_baseline"] = round(baseline, 1)
        figures["rss_mb_max"] = round(max(samples), 1)
        figures["seconds_to_drain"] = round(time.monotonic() - started - OUTAGE, 1)
        assert final == Counter(success=len(tids)), final
        executed: Counter[str] = Counter()
        for device in fleet.devices:
            executed.update(device.executed)
        assert all(executed[t] == 1 for t in tids)
        assert max(samples) - baseline < RSS_GROWTH_LIMIT_MB, figures
        left = await probe.scalar("SELECT count(*) FROM outbox WHERE status='pending'")
        assert left == 0
    finally:
        print("figures:", json.dumps(figures))
        await fleet.stop()
        await backend.stop()
        await session.close()
        probe.close()
        service.close()


PRUNE_ROWS = size("prune_rows", 500, 20_000)


@pytest.mark.timeout(120 + PRUNE_ROWS * 0.03)  # two write transactions per row
async def test_processed_and_rejected_messages_are_pruned(tmp_path: Path) -> None:
    clock = FrozenClock()
    service = LockerService(
        make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'p.db'}"), clock=clock
    )
    await service.migrate()
    n = PRUNE_ROWS
    try:
        created = await service.create_bank("Prune", "Lab", 2)
        assert await service.devices.register(created.token, "prune-cid") == "success"
        for i in range(n):
            event = DeviceEvent(
                event="door_state_changed",
                event_id=f"e-{i}",
                timestamp=clock.now(),
                data={"compartment_number": 1, "state": "open" if i % 2 else "closed"},
            )
            assert await service.devices.record_event(created.uuid, event) == Outcome.applied()
            await service.devices.record_rejected("locker/x/event", b"\x00" * 4096, "bad")

        async def counts() -> tuple[int, int]:
            probe = SqlProbe(f"sqlite:///{tmp_path / 'p.db'}")
            try:
                return (
                    int(await probe.scalar("SELECT count(*) FROM processed_messages")),
                    int(await probe.scalar("SELECT count(*) FROM rejected_messages")),
                )
            finally:
                probe.close()

        assert await counts() == (n, n)
        await service.devices.prune()  # nothing is old yet
        assert await counts() == (n, n)
        clock.advance(DEDUP_TTL.total_seconds() + 1)
        await service.devices.prune()
        assert await counts() == (0, n)  # dedup keys gone, rejected kept 30 days
        clock.advance(timedelta(days=30).total_seconds())
        await service.devices.prune()
        assert await counts() == (0, 0)
        print(f"figures: pruned {n} processed and {n} rejected messages")
    finally:
        service.close()
