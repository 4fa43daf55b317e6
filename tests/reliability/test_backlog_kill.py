"""RELIABILITY.md F6: a backend SIGKILLed with a backlog loses none of it.

A real `locker-console --headless` process (a private Mosquitto, SQLite in tmp) serves
provisioned banks. The test takes SQLite's write lock from another connection
(`BEGIN IMMEDIATE`), so nothing the backend receives can be committed, and then every bank
publishes `qr_scanned` events (QoS 1, unique `event_id`; the broker PUBACKs each). Once
the backend has received its in-flight window of them (MQTT 5 Receive Maximum, `acks.py`)
it is SIGKILLed, the lock released and the backend started again.

Asserted: the backend held no more than its window unacknowledged; after the restart every
event is in the store exactly once (one `processed_messages` row and one `QrScanned` per
`event_id`), nothing was rejected. Before manual acknowledgements paho PUBACKed each
message on receipt and the kill lost everything received but not committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from backend.mqtt.acks import RECEIVE_MAXIMUM
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.http_api import ProvisionedBank, provision
from tests.support.mosquitto import MosquittoBroker
from tests.support.reliability_tools import SqlProbe, log, operator_service, size
from tests.support.settings import TEST_SECRETS_ENV
from tests.support.waiting import until

BANKS = size("backlog_banks", 10, 50)
EVENTS = size("backlog_events", 3000, 20_000)  # more than the backend's in-flight window
WARM_UP = 2  # per bank, committed before the lock: the path works
SECRETS = TEST_SECRETS_ENV

pytestmark = [pytest.mark.reliability, pytest.mark.mosquitto, pytest.mark.timeout(600)]


def event(bank: ProvisionedBank, n: int) -> tuple[str, bytes]:
    event_id = f"{bank.uuid[:8]}-{n}"
    payload = {
        "type": "event",
        "event": "qr_scanned",
        "event_id": event_id,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {"qr_payload": f"ticket-{n}", "scanner": "front"},
    }
    return event_id, json.dumps(payload).encode()


async def publish(broker: MosquittoBroker, bank: ProvisionedBank, numbers: range) -> list[str]:
    """Publish the bank's events as its device would; returns the ids the broker PUBACKed."""
    sent: list[str] = []
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=bank.client_id, max_inflight_messages=100
    ) as client:
        for n in numbers:
            event_id, payload = event(bank, n)
            await client.publish(f"locker/{bank.uuid}/event", payload, qos=1, timeout=30)
            sent.append(event_id)
    return sent


async def received_events(backend: HeadlessInstance, http: aiohttp.ClientSession) -> int:
    metrics = await backend.metrics(http)
    return int(metrics.get("locker_mqtt_messages_total", kind="event"))


async def test_sigkill_with_a_backlog_loses_nothing_and_stores_each_event_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    db_path = tmp_path / "locker.db"
    db_url = f"sqlite:///{db_path}"
    backend = headless_instance(
        "backlog",
        tmp_path / "backend",
        {
            "DATABASE_URL": db_url,
            "MQTT_HOST": mosquitto.host,
            "MQTT_PORT": str(mosquitto.port),
            **SECRETS,
        },
    )
    service = operator_service(tmp_path, db_url, mosquitto)
    await service.migrate()
    probe = SqlProbe(db_url)
    lock: sqlite3.Connection | None = None
    http = aiohttp.ClientSession()

    async def stored() -> set[str]:
        rows = await probe.rows("SELECT message_key FROM processed_messages")
        return {r.message_key for r in rows}

    try:
        await backend.start()
        await backend.wait_healthy(http, 60)
        banks = [await provision(service, f"Backlog {n:02d}", 2) for n in range(BANKS)]
        warm = [e for b in banks for e in await publish(mosquitto, b, range(WARM_UP))]
        await until(stored, lambda keys: set(warm) <= keys, "warm-up events stored", 60)

        # The store cannot commit: whatever arrives now waits in the backend.
        lock = sqlite3.connect(db_path, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        per_bank = EVENTS // BANKS
        batches = await asyncio.gather(
            *(publish(mosquitto, b, range(WARM_UP, WARM_UP + per_bank)) for b in banks)
        )
        backlog = [e for batch in batches for e in batch]
        log(f"{len(backlog)} events PUBACKed by the broker while the store is locked")
        window = min(len(backlog), RECEIVE_MAXIMUM)
        held = await until(
            lambda: received_events(backend, http),
            lambda n: n - len(warm) >= window,
            f"the backend holding {window} received events",
            60,
        )
        held -= len(warm)
        # The broker sends no more than the window while none of it is acknowledged.
        assert held <= RECEIVE_MAXIMUM, held
        assert set(warm) == await asyncio.wait_for(stored(), 60)  # nothing of it committed
        await backend.kill()
        log(f"SIGKILL with {held} events received and not committed")
        lock.execute("ROLLBACK")
        lock.close()
        lock = None

        await backend.start()
        await backend.wait_healthy(http, 60)
        expected = set(warm) | set(backlog)
        done = await until(stored, lambda keys: expected <= keys, "every event stored", 180)
        assert done == expected
        count = await probe.scalar(
            "SELECT count(*) FROM stored_events WHERE event_type = 'QrScanned'"
        )
        assert count == len(expected)  # one domain event per event_id: none lost, none twice
        assert await probe.scalar("SELECT count(*) FROM rejected_messages") == 0
        log(f"all {len(expected)} events stored once after the restart")
        assert await backend.stop() == 0, backend.log_tail()
    finally:
        if lock is not None:
            with contextlib.suppress(sqlite3.Error):
                lock.execute("ROLLBACK")
            lock.close()
        await backend.stop()
        await http.close()
        probe.close()
        service.close()
        print(f"--- backend log\n{backend.log_tail(20)}")
