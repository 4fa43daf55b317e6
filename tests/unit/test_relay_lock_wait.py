"""A relay that does not hold the drain lock asks for it once per `lock_retry`, however
often its own commits wake it (it used to spin: the wake flag stayed set, so every wait
returned at once and the instance hammered PostgreSQL with `pg_try_advisory_lock`)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from backend.mqtt.connection import MqttConnection
from backend.mqtt.metrics import Metrics
from backend.mqtt.relay import OutboxRelay, RelayOptions
from backend.service import LockerService
from tests.support.settings import make_settings


class RefusedLock:
    """Another instance holds the drain lock."""

    def __init__(self) -> None:
        self.asked = 0

    async def acquire(self) -> bool:
        self.asked += 1
        await asyncio.sleep(0)  # a real lock asks the database (in a thread)
        return False

    async def release(self) -> None:
        return None


async def _no_message(_message: object, _ack: object) -> None:
    return None


async def test_a_relay_without_the_lock_is_not_woken_into_a_spin(tmp_path: Path) -> None:
    service = LockerService(make_settings(tmp_path, database_url=f"sqlite:///{tmp_path}/l.db"))
    connection = MqttConnection(service.settings, _no_message)
    connection.state.set_connected()
    lock = RefusedLock()
    relay = OutboxRelay(service, connection, Metrics(), RelayOptions(lock_retry=3600.0), lock=lock)
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(500):  # our own commits keep waking the relay
            relay.wake()
            await asyncio.sleep(0)  # let the relay run (a yield, not a wait)
        assert lock.asked == 1, f"asked for the lock {lock.asked} times"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        service.close()
