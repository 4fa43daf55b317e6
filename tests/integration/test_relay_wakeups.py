"""The relay reads the outbox again when another task commits, not after its own
bookkeeping: marking a row sent (`CommandSent`) adds no rows, and re-reading the outbox
then cost every command one more query while its response was on the way."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from backend.mqtt.connection import MqttConnection
from backend.mqtt.metrics import Metrics
from backend.mqtt.relay import OutboxRelay
from backend.service import LockerService
from tests.support.mosquitto import MosquittoBroker
from tests.support.settings import make_settings


async def _no_message(_message: object, _ack: object) -> None:
    return None


async def test_the_relays_own_commits_do_not_wake_it(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/l.db",
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
    )
    service = LockerService(settings)
    await service.migrate()
    connection = MqttConnection(settings, _no_message)
    metrics = Metrics()
    relay = OutboxRelay(service, connection, metrics)
    service.subscribe(relay.on_events)
    running = asyncio.create_task(connection.run())
    try:
        await connection.state.wait_for(True, 10)
        bank = await service.create_bank("Hall", "A", 4)
        assert await service.devices.register(bank.token, "device-1") == "success"
        assert relay.woken  # the provisioning reply is in the outbox
        assert not await relay.drain_once()
        assert metrics.published["provisioning_reply"] == 1

        txn = await service.request_open(bank.uuid, 1)
        assert relay.woken  # a commit of another task (the command is in the outbox)
        assert not await relay.drain_once()
        assert metrics.published["command"] == 1
        assert (await service.get_transaction(txn.transaction_id)).status == "sent"
        assert not relay.woken  # CommandSent was the relay's own commit

        await service.request_open(bank.uuid, 2)
        assert relay.woken
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        service.close()
