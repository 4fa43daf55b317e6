"""The relay's `sent` marks ride on the next write transaction of the process (issue 19):
a command's response that arrives before its mark is written is stored in the same
transaction, after `CommandSent`; with no other write the marks get a transaction of their
own; a transaction that fails loses no mark. Also: `request_open` returns the view its own
transaction wrote, and only commits that add outbox rows wake the relay."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from backend.domain.contract import CommandResponse
from backend.domain.errors import RuleViolation
from backend.domain.outcomes import Outcome
from backend.domain.timeutil import FrozenClock
from backend.mqtt.connection import MqttConnection
from backend.mqtt.metrics import Metrics
from backend.mqtt.relay import OutboxRelay, RelayOptions
from backend.outbox_marks import RelayItem
from backend.service import LockerService
from backend.store.event_store import RecordedEvent
from tests.support.http_api import provision
from tests.support.mosquitto import MosquittoBroker
from tests.support.settings import make_settings
from tests.support.waiting import until

LONG_WINDOW = 60.0  # longer than any test: only another transaction ends the wait


class Commits:
    """The event types of each commit, as the service's listeners see them."""

    def __init__(self) -> None:
        self.lists: list[list[str]] = []

    def __call__(self, events: list[RecordedEvent]) -> None:
        self.lists.append([e.event_type for e in events])


async def _command_item(service: LockerService, transaction_id: str) -> RelayItem:
    (item,) = [
        i for i in await service.devices.outbox_due(100) if i.transaction_id == transaction_id
    ]
    return item


def _opened(clock: FrozenClock, transaction_id: str) -> CommandResponse:
    return CommandResponse(
        action="open_compartment",
        result="success",
        transaction_id=transaction_id,
        timestamp=clock.now(),
    )


async def _still_pending(service: LockerService, item: RelayItem) -> bool:
    return item.id in [i.id for i in await service.devices.outbox_due(100)]


async def test_a_response_before_the_sent_mark_is_stored_with_it_in_one_transaction(
    service: LockerService, clock: FrozenClock
) -> None:
    bank = (await provision(service)).uuid
    txn = await service.request_open(bank, 1, actor="op")
    item = await _command_item(service, txn.transaction_id)
    commits = Commits()
    service.subscribe(commits)

    marking = asyncio.create_task(service.devices.outbox.outbox_published_soon([item], LONG_WINDOW))
    await _registered(service)
    outcome = await service.devices.record_response(bank, _opened(clock, txn.transaction_id))
    await asyncio.wait_for(marking, 10)  # the response's transaction wrote the mark

    assert outcome == Outcome.applied()
    assert commits.lists == [["CommandSent", "CompartmentOpened"]]  # one commit, in order
    view = await service.get_transaction(txn.transaction_id)
    assert view.status == "success"
    assert view.sent_at is not None
    assert not await _still_pending(service, item)  # marked sent: never published again
    events = [e.event_type for e in await service.bank_events(bank)]
    assert events[-3:] == ["CompartmentOpeningRequested", "CommandSent", "CompartmentOpened"]
    assert not service.devices.outbox.unmarked.waiting()


async def test_with_no_other_write_the_marks_get_a_transaction_of_their_own(
    service: LockerService,
) -> None:
    bank = (await provision(service)).uuid
    txn = await service.request_open(bank, 2, actor="op")
    item = await _command_item(service, txn.transaction_id)
    commits = Commits()
    service.subscribe(commits)

    await asyncio.wait_for(service.devices.outbox.outbox_published_soon([item], 0.01), 10)

    assert commits.lists == [["CommandSent"]]
    assert (await service.get_transaction(txn.transaction_id)).status == "sent"
    assert not await _still_pending(service, item)
    assert not service.devices.outbox.unmarked.waiting()


async def test_a_failed_transaction_loses_no_mark(service: LockerService) -> None:
    bank = (await provision(service)).uuid
    txn = await service.request_open(bank, 3, actor="op")
    item = await _command_item(service, txn.transaction_id)
    commits = Commits()
    service.subscribe(commits)

    marking = asyncio.create_task(service.devices.outbox.outbox_published_soon([item], 0.5))
    await _registered(service)
    with pytest.raises(RuleViolation):  # compartment 3 has its open in flight: rolled back
        await service.request_open(bank, 3, actor="op")
    await asyncio.wait_for(marking, 10)

    assert commits.lists == [["CommandSent"]]  # written once, by the relay's own transaction
    assert (await service.get_transaction(txn.transaction_id)).status == "sent"
    assert not await _still_pending(service, item)


async def _registered(service: LockerService) -> None:
    """Until the task just started has handed its batch over (it does before it waits)."""
    await until(service.devices.outbox.unmarked.waiting, what="the marks waiting")


async def test_request_open_returns_the_view_as_stored(service: LockerService) -> None:
    bank = (await provision(service)).uuid
    returned = await service.request_open(bank, 4, actor="op")
    assert returned == await service.get_transaction(returned.transaction_id)
    assert returned.status == "pending"
    pushed = await service.request_config_push(bank, actor="op")
    assert pushed == await service.get_transaction(pushed.transaction_id)


async def _no_message(_message: object, _ack: object) -> None:
    return None


async def test_only_commits_that_add_outbox_rows_wake_the_relay(
    service: LockerService, clock: FrozenClock
) -> None:
    relay = OutboxRelay(service, MqttConnection(service.settings, _no_message), Metrics())
    service.subscribe(relay.on_events)
    bank = (await provision(service)).uuid
    assert relay.woken  # the provisioning reply
    txn = await service.request_open(bank, 1, actor="op")
    assert relay.woken  # the command
    item = await _command_item(service, txn.transaction_id)
    await service.devices.outbox_published_many([item])
    relay._wake.clear()

    await service.devices.record_response(bank, _opened(clock, txn.transaction_id))
    assert (await service.get_transaction(txn.transaction_id)).status == "success"
    assert not relay.woken  # events, but no row to publish

    await service.request_open(bank, 2, actor="op")
    assert relay.woken


async def test_with_a_shared_group_the_marks_are_written_at_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Several instances share the responses: the one that publishes does not wait for its
    own next write (the response is most likely stored by another instance)."""
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/l.db",
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_shared_group="lockers",
        mqtt_protocol="5",
    )
    service = LockerService(settings)
    await service.migrate()
    connection = MqttConnection(settings, _no_message)
    relay = OutboxRelay(service, connection, Metrics(), RelayOptions(sent_mark_window=LONG_WINDOW))
    running = asyncio.create_task(connection.run())
    try:
        await connection.state.wait_for(True, 10)
        bank = (await provision(service)).uuid
        txn = await service.request_open(bank, 1, actor="op")
        await asyncio.wait_for(relay.drain_once(), 10)  # not LONG_WINDOW
        assert (await service.get_transaction(txn.transaction_id)).status == "sent"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        service.close()
