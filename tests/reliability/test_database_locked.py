"""Issue 8 / DESIGN section 16, last row: the database locked while responses arrive.

A real `locker-console --headless` process (a private Mosquitto, SQLite in tmp) serves
provisioned banks whose devices (`TestDevice`, hold mode) collect their open commands
without answering. Once every command has reached its device, the test takes SQLite's
write lock from another connection (`BEGIN IMMEDIATE`) and only then lets the devices
answer: every response arrives while the store cannot be written. The lock is held until
the backend's log shows that writing the responses failed (SQLite's 15 s busy timeout ran
out: "database is locked" / "store failed ... retrying"), at full size until the handler
had retried them twice with backoff. Then the lock is released. (Holding it until the
handler gives messages up, so that only the re-ask recovers them, takes far longer: see
RELIABILITY.md, finding F4.)

Asserted: every command ends `success` with exactly one `CompartmentOpened`, no device
executed a command twice, the process stayed alive and healthy, and it stops cleanly.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.headless_instances import headless_instance
from tests.support.http_api import provision
from tests.support.mosquitto import MosquittoBroker
from tests.support.mqtt_device import TestDevice
from tests.support.reliability_tools import SqlProbe, log, operator_service, size
from tests.support.settings import TEST_SECRETS_ENV
from tests.support.waiting import until

BANKS = size("lock_banks", 5, 20)
COMPARTMENTS = 4
# How long the fault lasts, as conditions on the backend's log: CI, until a write of the
# responses failed (SQLite's busy timeout, 15 s, ran out); full, until the handler retried
# the responses twice (with backoff; ~1.5 min of lock).
HANDLER_RETRIES = size("lock_handler_retries", 0, 2)


def fault_seen(log_text: str) -> bool:
    if HANDLER_RETRIES:
        return log_text.count("store failed for responses") >= HANDLER_RETRIES
    return "database is locked" in log_text or "store failed for" in log_text


SECRETS = TEST_SECRETS_ENV

pytestmark = [pytest.mark.reliability, pytest.mark.mosquitto, pytest.mark.timeout(900)]


async def test_database_locked_while_responses_arrive_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    db_path = tmp_path / "locker.db"
    db_url = f"sqlite:///{db_path}"
    backend = headless_instance(
        "locked",
        tmp_path / "backend",
        {
            "DATABASE_URL": db_url,
            "MQTT_HOST": mosquitto.host,
            "MQTT_PORT": str(mosquitto.port),
            "COMMAND_TIMEOUT": "900",
            "CONFIG_TTL": "1200",
            "COMMAND_RETRY_AFTER": "5",
            **SECRETS,
        },
    )
    service = operator_service(
        tmp_path, db_url, mosquitto, command_timeout=900.0, config_ttl=1200.0
    )
    await service.migrate()
    probe = SqlProbe(db_url)
    figures: dict[str, Any] = {"banks": BANKS, "opens": BANKS * COMPARTMENTS}
    session = aiohttp.ClientSession()
    devices: list[TestDevice] = []
    lock: sqlite3.Connection | None = None
    try:
        await backend.start()
        await backend.wait_healthy(session, 60)
        for n in range(BANKS):
            bank = await provision(service, f"Locked {n:02d}", COMPARTMENTS)
            device = TestDevice(mosquitto.host, mosquitto.port, bank.uuid, bank.password)
            device.hold = True
            await device.start()
            devices.append(device)
        tids: dict[str, TestDevice] = {}
        for device in devices:
            for number in range(1, COMPARTMENTS + 1):
                txn = await service.request_open(device.bank_uuid, number, actor="lock")
                tids[txn.transaction_id] = device

        async def delivered() -> int:
            return sum(
                1 for t, d in tids.items() if any(c.transaction_id == t for c in d.commands())
            )

        await until(delivered, lambda n: n == len(tids), "every open delivered", 60)
        log_start = backend.log_path.stat().st_size

        # The fault: another connection holds SQLite's write lock.
        lock = sqlite3.connect(db_path, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        locked_at = time.monotonic()
        log("write lock taken; devices answer")
        for device in devices:
            figures["responses_published_while_locked"] = figures.get(
                "responses_published_while_locked", 0
            ) + len(device.held)
            device.hold = False  # from now on it answers at once, re-asks too (from its memory)
            await device.answer_held()  # PUBACKed by the broker: the backend has them

        async def log_since_lock() -> str:
            return backend.log_path.read_bytes()[log_start:].decode(errors="replace")

        await until(log_since_lock, fault_seen, "failed writes logged", 600, 0.5)
        assert backend.running, backend.log_tail()
        lock.execute("ROLLBACK")
        lock.close()
        lock = None
        figures["lock_held_seconds"] = round(time.monotonic() - locked_at, 1)
        log("write lock released")

        async def statuses() -> Counter[str]:
            current = await probe.statuses()
            return Counter(current.get(t, "missing") for t in tids)

        final = await until(statuses, lambda c: c == Counter(success=len(tids)), "success", 180)
        figures["statuses"] = dict(final)
        figures["seconds_from_release_to_all_success"] = round(
            time.monotonic() - locked_at - figures["lock_held_seconds"], 1
        )
        outcomes = await probe.outcomes()
        assert all(outcomes.get(t) == ["CompartmentOpened"] for t in tids), {
            t: outcomes.get(t) for t in tids if outcomes.get(t) != ["CompartmentOpened"]
        }
        executed = Counter(t for d in devices for t in d.executed if t in tids)
        assert executed == Counter(dict.fromkeys(tids, 1)), executed
        metrics = await backend.metrics(session)
        figures["handler_errors"] = int(metrics.get("locker_mqtt_handler_errors_total"))
        figures["duplicate_responses"] = int(
            metrics.get("locker_mqtt_duplicates_total", kind="response")
        )
        figures["sends"] = int(
            await probe.scalar("SELECT coalesce(sum(attempts),0) FROM command_transactions")
        )
        figures["duplicates_recorded"] = int(
            await probe.scalar("SELECT coalesce(sum(duplicate_count),0) FROM command_transactions")
        )
        figures["commands_received_by_devices"] = sum(len(d.received) for d in devices)
        lines = (await log_since_lock()).splitlines()
        figures["store_retry_lines"] = sum("store failed for" in line for line in lines)
        figures["give_up_lines"] = sum("giving up on" in line for line in lines)
        async with session.get(f"{backend.url}/healthz") as resp:
            assert resp.status == 200
        assert backend.running
        assert await backend.stop() == 0, backend.log_tail()
    finally:
        print("figures:", json.dumps(figures))
        if lock is not None:
            with contextlib.suppress(sqlite3.Error):
                lock.execute("ROLLBACK")
            lock.close()
        for device in devices:
            await device.stop()
        await backend.stop()
        await session.close()
        probe.close()
        service.close()
        print(f"--- backend log\n{backend.log_tail(30)}")
