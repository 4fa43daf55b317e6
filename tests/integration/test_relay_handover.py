"""The relay publishes the rows a commit of this process hands over without reading the
outbox back, and only when nothing can be due before them: each command goes out once,
in id order, with a row written by another process (the CLI) in between as well.

Real parts: a private Mosquitto, the relay's own connection, SQLite, and a plain aiomqtt
client subscribed where the devices listen."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from backend.mqtt.connection import MqttConnection
from backend.mqtt.metrics import Metrics
from backend.mqtt.relay import OutboxRelay
from backend.service import LockerService
from tests.support.mosquitto import MosquittoBroker
from tests.support.settings import make_settings


async def _no_message(_message: object, _ack: object) -> None:
    return None


@dataclass
class Heard:
    """Transaction ids of the commands a device-side subscriber received, in order."""

    ids: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int) -> list[str]:
        async with asyncio.timeout(10):
            while len(self.ids) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.ids


@dataclass
class Setup:
    service: LockerService
    relay: OutboxRelay
    heard: Heard
    bank: str
    db_url: str


@pytest.fixture
async def setup(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Setup]:
    db_url = f"sqlite:///{tmp_path}/l.db"
    settings = make_settings(
        tmp_path, database_url=db_url, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port
    )
    service = LockerService(settings)
    await service.migrate()
    connection = MqttConnection(settings, _no_message)
    relay = OutboxRelay(service, connection, Metrics())
    service.subscribe(relay.on_events)
    heard = Heard()
    subscribed = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="device") as c:
            await c.subscribe("locker/+/command", qos=1)
            subscribed.set()
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                heard.ids.append(json.loads(message.payload)["transaction_id"])
                heard.changed.set()

    tasks = [asyncio.create_task(connection.run()), asyncio.create_task(listen())]
    try:
        async with asyncio.timeout(10):
            await connection.state.wait_for(True)
            await subscribed.wait()
        bank = await service.create_bank("Hall", "A", 6)
        assert await service.devices.register(bank.token, "device-1") == "success"
        assert not await relay.drain_once()  # the provisioning reply, read from the outbox
        yield Setup(service, relay, heard, bank.uuid, db_url)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        service.close()


async def test_handed_commands_go_out_once_in_order_without_a_read(setup: Setup) -> None:
    service, relay = setup.service, setup.relay
    reads = relay.handover.reads
    first = [(await service.request_open(setup.bank, n)).transaction_id for n in (1, 2, 3)]
    assert not await relay.drain_once()
    assert (relay.handover.used, relay.handover.reads) == (1, reads)
    second = (await service.request_open(setup.bank, 4)).transaction_id
    assert not await relay.drain_once()
    assert relay.handover.used == 2
    assert await setup.heard.until(4) == [*first, second]
    for tid in [*first, second]:
        assert (await service.get_transaction(tid)).status == "sent"
    assert not await relay.drain_once()  # nothing is due: nothing goes out again
    assert await service.devices.outbox_depth() == 0
    assert len(setup.heard.ids) == 4


async def test_a_row_of_another_process_in_between_means_a_read(setup: Setup) -> None:
    service, relay = setup.service, setup.relay
    other = LockerService(service.settings)  # the CLI: its commit is not handed over to us
    try:
        theirs = (await other.request_open(setup.bank, 1)).transaction_id
    finally:
        other.close()
    ours = (await service.request_open(setup.bank, 2)).transaction_id
    reads = relay.handover.reads
    assert not await relay.drain_once()
    assert relay.handover.reads == reads + 1 and relay.handover.used == 0
    assert await setup.heard.until(2) == [theirs, ours]  # id order kept
    # what the read learnt lets the next command be handed over again
    again = (await service.request_open(setup.bank, 3)).transaction_id
    assert not await relay.drain_once()
    assert relay.handover.used == 1
    assert await setup.heard.until(3) == [theirs, ours, again]
    assert await service.devices.outbox_depth() == 0
