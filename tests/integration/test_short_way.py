"""Heartbeats and responses that skip their lane (issue 19) keep each bank's order,
survive a store failure and are acknowledged once finished: a real LockerService
(SQLite, and PostgreSQL when TEST_DATABASE_URL is set) and the real Listener, fed the
messages a connection would hand it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import aiomqtt
import pytest
from sqlalchemy.exc import OperationalError

from backend.device_liveness import LivenessRecorded
from backend.device_service import HeartbeatIn
from backend.domain.contract import CommandResponse, ConnectionLost, Heartbeat, HeartbeatData
from backend.domain.outcomes import ResponseResult
from backend.domain.topics import device_topic
from backend.mqtt.acks import ConnectionAcks
from backend.mqtt.listener import Listener, ListenerOptions
from backend.mqtt.metrics import Metrics
from backend.service import LockerService
from backend.store import queries
from backend.views import RejectedView
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


def state_message(bank_uuid: str, payload: bytes, mid: int) -> aiomqtt.Message:
    return aiomqtt.Message(device_topic(bank_uuid, "state"), payload, 1, False, mid, None)


def beat(at: datetime) -> bytes:
    return Heartbeat(data=HeartbeatData(timestamp=at, uptime_seconds=5)).to_bytes()


def will(at: datetime) -> bytes:
    return ConnectionLost(timestamp=at).to_bytes()


@pytest.fixture
async def listener(service: LockerService) -> AsyncIterator[Listener]:
    listener = Listener(service, Metrics())
    service.subscribe(listener.observe)
    listener.start()
    try:
        yield listener
    finally:
        await listener.stop(5)


async def provisioned_bank(service: LockerService) -> str:
    created = await service.create_bank("Bank", "Lab", 2, heartbeat_interval_seconds=5)
    assert await service.devices.register(created.token, created.uuid) == "success"
    return created.uuid


async def liveness_events(service: LockerService, bank_uuid: str) -> list[str]:
    """The bank's online/offline transitions, in order."""
    events = await service.bank_events(bank_uuid, limit=100)
    return [
        e.event_type
        for e in sorted(events, key=lambda e: e.position)
        if e.event_type in ("LockerBankCameOnline", "LockerBankWentOffline")
    ]


async def settled(listener: Listener) -> None:
    """Every lane drained and no heartbeat of the short way in flight."""

    async def idle() -> bool:
        await listener.dispatcher.drain(10)
        return not listener.beats_in_flight

    await until(idle, bool, "heartbeats of the short way committed", timeout=10, interval=0.02)


TWICE_ONLINE_THEN_OFFLINE = [
    "LockerBankCameOnline",
    "LockerBankWentOffline",
    "LockerBankCameOnline",
    "LockerBankWentOffline",
]
"""A heartbeat then a last will, twice: the order the liveness events must keep."""


async def test_a_last_will_right_after_a_short_way_heartbeat_wins(
    service: LockerService, listener: Listener
) -> None:
    bank = await provisioned_bank(service)
    now = service.clock.now()
    await listener.on_message(state_message(bank, beat(now), 1))  # the bank is learnt
    await settled(listener)
    await listener.on_message(state_message(bank, will(now), 2))
    await settled(listener)
    assert (await service.get_bank(bank)).status == "offline"

    short_before = listener.short_way
    acks = ConnectionAcks(None)
    await listener.on_message(state_message(bank, beat(now), 3), acks.take(3, 1))
    await listener.on_message(state_message(bank, will(now), 4), acks.take(4, 1))
    assert listener.short_way == short_before + 1  # the heartbeat skipped its lane
    await settled(listener)
    assert acks.held == 0

    assert (await service.get_bank(bank)).status == "offline"
    assert (await liveness_events(service, bank)) == TWICE_ONLINE_THEN_OFFLINE


async def test_a_short_way_heartbeat_whose_batch_fails_is_retried_in_order(
    service: LockerService, listener: Listener
) -> None:
    bank = await provisioned_bank(service)
    now = service.clock.now()
    await listener.on_message(state_message(bank, beat(now), 1))
    await listener.on_message(state_message(bank, will(now), 2))
    await settled(listener)
    assert (await service.get_bank(bank)).status == "offline"

    record = service.devices.record_liveness
    failures: list[int] = []
    acks = ConnectionAcks(None)

    async def locked_once(items: Sequence[HeartbeatIn]) -> LivenessRecorded:
        if not failures:
            failures.append(len(items))
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        return await record(items)

    service.devices.record_liveness = locked_once  # type: ignore[method-assign]  # a test double
    short_before = listener.short_way
    await listener.on_message(state_message(bank, beat(now), 3), acks.take(3, 1))
    await listener.on_message(state_message(bank, will(now), 4), acks.take(4, 1))
    assert listener.short_way == short_before + 1
    assert acks.held == 2
    await settled(listener)

    assert acks.held == 0  # both acknowledged once handled, the heartbeat after its retry
    assert failures == [1]  # the batch failed once; its heartbeat went on through the lane
    assert listener.metrics.heartbeats_taken == 2
    assert (await service.get_bank(bank)).status == "offline"
    assert (await liveness_events(service, bank)) == TWICE_ONLINE_THEN_OFFLINE


async def test_a_lone_short_way_heartbeat_whose_batch_fails_is_retried(
    service: LockerService, listener: Listener
) -> None:
    bank = await provisioned_bank(service)
    now = service.clock.now()
    await listener.on_message(state_message(bank, beat(now), 1))
    await listener.on_message(state_message(bank, will(now), 2))
    await settled(listener)

    record = service.devices.record_liveness
    calls: list[int] = []

    async def locked_once(items: Sequence[HeartbeatIn]) -> LivenessRecorded:
        calls.append(len(items))
        if len(calls) == 1:
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        return await record(items)

    service.devices.record_liveness = locked_once  # type: ignore[method-assign]  # a test double
    await listener.on_message(state_message(bank, beat(now), 3))
    await settled(listener)
    assert calls == [1, 1]
    assert (await service.get_bank(bank)).status == "online"


async def test_a_bank_comes_online_in_its_own_batch_and_its_heartbeat_waits_for_it(
    service: LockerService, listener: Listener
) -> None:
    """The heartbeat of a bank not online is written at once; the bank is brought online
    by the arrivals batcher. Until that commits the heartbeat is not acknowledged and a
    last will of the bank waits (it must not be applied to the bank still offline)."""
    bank = await provisioned_bank(service)
    other = await provisioned_bank(service)
    now = service.clock.now()
    await listener.on_message(state_message(other, beat(now), 1))
    await settled(listener)
    assert (await service.get_bank(other)).status == "online"

    bring_online = service.devices.bring_online
    gate = asyncio.Event()
    held: list[list[str]] = []

    async def gated(banks: Sequence[str]) -> list[bool]:
        held.append(list(banks))
        await gate.wait()
        return await bring_online(banks)

    service.devices.bring_online = gated  # type: ignore[method-assign]  # a test double
    acks = ConnectionAcks(None)
    taken = listener.metrics.heartbeats_taken
    await listener.on_message(state_message(bank, beat(now), 2), acks.take(2, 1))
    await until(lambda: held, bool, "the bank's arrival under way")
    assert listener.metrics.heartbeats_taken == taken + 1  # its liveness is written
    await listener.on_message(state_message(bank, will(now), 3), acks.take(3, 1))
    # meanwhile the bank already online is not held up by the arrival in progress
    await listener.on_message(state_message(other, beat(now), 4), acks.take(4, 1))
    await until(lambda: acks.held, lambda n: n == 2, "the online bank's heartbeat committed")
    assert (await service.get_bank(bank)).status == "provisioned"  # not online yet ...
    gate.set()
    await settled(listener)

    assert held == [[bank]]
    assert acks.held == 0  # ... and the heartbeat acknowledged once its bank was online
    assert (await service.get_bank(bank)).status == "offline"  # the last will came after
    assert (await liveness_events(service, bank)) == [
        "LockerBankCameOnline",
        "LockerBankWentOffline",
    ]


def response_message(bank_uuid: str, payload: bytes, mid: int) -> aiomqtt.Message:
    return aiomqtt.Message(device_topic(bank_uuid, "response"), payload, 1, False, mid, None)


async def test_responses_of_the_short_way_are_applied_refused_and_acknowledged(
    service: LockerService, listener: Listener
) -> None:
    bank = await provisioned_bank(service)
    now = service.clock.now()
    await listener.on_message(state_message(bank, beat(now), 1))  # the bank is learnt
    await settled(listener)
    opened = await service.request_open(bank, 1, actor="test")
    tid = opened.transaction_id
    answer = CommandResponse(
        action="open_compartment", result=ResponseResult.SUCCESS, transaction_id=tid, timestamp=now
    )
    stranger = answer.model_copy(update={"transaction_id": "not-a-command-of-ours"})
    acks = ConnectionAcks(None)
    short_before = listener.short_way
    await listener.on_message(response_message(bank, answer.to_bytes(), 2), acks.take(2, 1))
    await listener.on_message(response_message(bank, answer.to_bytes(), 3), acks.take(3, 1))
    await listener.on_message(response_message(bank, stranger.to_bytes(), 4), acks.take(4, 1))
    assert listener.short_way == short_before + 3
    await settled(listener)

    assert acks.held == 0  # applied, duplicate and refused: each acknowledged once finished
    txn = await service.get_transaction(tid)
    assert txn.status == "success" and txn.duplicate_count == 1
    assert listener.metrics.duplicates["response"] == 1

    def read_rejected() -> list[RejectedView]:
        with service.db.read_session() as session:
            return queries.list_rejected(session, 100)

    rejected = await service.db.read(read_rejected)
    assert [r.reason for r in rejected] == ["unknown transaction for this bank"]


async def test_the_short_way_stops_at_max_pending_and_the_lanes_push_back(
    service: LockerService,
) -> None:
    listener = Listener(service, Metrics(), ListenerOptions(max_pending=1))
    service.subscribe(listener.observe)
    listener.start()
    try:
        first, second = await provisioned_bank(service), await provisioned_bank(service)
        now = service.clock.now()
        await listener.on_message(state_message(first, beat(now), 1))  # banks are learnt
        await settled(listener)
        await listener.on_message(state_message(second, beat(now), 2))
        await settled(listener)
        short_before = listener.short_way
        await listener.on_message(state_message(first, beat(now), 3))  # one waits in its batch
        await listener.on_message(state_message(second, beat(now), 4))  # so this takes its lane
        assert listener.short_way == short_before + 1
        assert listener.dispatcher.busy(second)
        await settled(listener)
        assert listener.metrics.heartbeats_taken == 4
    finally:
        await listener.stop(5)
