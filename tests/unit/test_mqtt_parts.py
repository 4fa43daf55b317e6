"""The MQTT runtime's parts without a broker or a store: lanes, batching, backoff,
topic classification, identities, expiry properties."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aiomqtt
from sqlalchemy.exc import OperationalError

from backend.domain.topics import TopicKind, inbound_filters
from backend.mqtt.backoff import Backoff
from backend.mqtt.batcher import Batcher
from backend.mqtt.dispatcher import Dispatcher
from backend.mqtt.inbound import INVALID_LANE, REGISTER_LANE, classify
from backend.mqtt.relay import expiry_properties
from backend.mqtt.state import ConnectionState
from backend.mqtt.subscriptions import shared
from backend.store.database import first_line

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
BANK = str(uuid.UUID(int=7))


def message(topic: str, payload: bytes = b"{}", retain: bool = False) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=retain, mid=1, properties=None)


def test_topic_filters_and_shared_prefix() -> None:
    assert inbound_filters(True) == [
        "locker/register/+",
        "locker/+/response",
        "locker/+/status",
        "locker/+/event",
        "locker/+/state/#",
    ]
    assert "locker/+/status" not in inbound_filters(False)
    assert shared("locker/+/event", "g") == "$share/g/locker/+/event"
    assert shared("locker/+/event", None) == "locker/+/event"


def test_classify_lanes_and_problems() -> None:
    beat = classify(message(f"locker/{BANK}/state", retain=True), NOW, accept_legacy_status=True)
    assert (beat.kind, beat.lane, beat.retained) == (TopicKind.STATE, BANK, True)
    reg = classify(message("locker/register/tok"), NOW, accept_legacy_status=True)
    assert (reg.kind, reg.key, reg.lane) == (TopicKind.REGISTER, "tok", REGISTER_LANE)
    legacy = classify(message(f"locker/{BANK}/status"), NOW, accept_legacy_status=False)
    assert legacy.lane == INVALID_LANE and "legacy" in (legacy.problem or "")
    bad = classify(message("locker/nope/response"), NOW, accept_legacy_status=True)
    assert bad.lane == INVALID_LANE and bad.label == "invalid_topic" and bad.problem


def test_backoff_is_capped_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, jitter=0.0)
    delays = [backoff.next() for _ in range(8)]
    assert delays[:3] == [0.1, 0.2, 0.4] and max(delays) == 2.0
    backoff.attempts = 10_000  # no overflow however long the broker is away
    assert backoff.next() == 2.0
    backoff.reset()
    assert backoff.next() == 0.1


def test_expiry_interval_never_reaches_past_expires_at() -> None:
    # Mosquitto counts whole seconds: rounded down, one second of margin for its clock.
    props = expiry_properties(NOW + timedelta(seconds=29.2), NOW)
    assert props is not None and props.MessageExpiryInterval == 28
    soon = expiry_properties(NOW + timedelta(milliseconds=10), NOW)
    assert soon is not None and soon.MessageExpiryInterval == 1
    assert expiry_properties(None, NOW) is None


async def test_lanes_keep_order_per_key_and_do_not_block_each_other() -> None:
    seen: list[tuple[str, int]] = []
    release_a = asyncio.Event()
    b_done = asyncio.Event()

    async def handle(key: str, items: list[int]) -> None:
        if key == "a" and items[0] == 0:
            await release_a.wait()
        seen.extend((key, i) for i in items)
        if key == "b" and items[-1] == 2:
            b_done.set()

    lanes: Dispatcher[int] = Dispatcher(handle, max_group=2)
    for i in range(3):
        await lanes.put("a", i)
    for i in range(3):
        await lanes.put("b", i)
    await asyncio.wait_for(b_done.wait(), 2)
    assert [i for k, i in seen if k == "b"] == [0, 1, 2]
    assert [i for k, i in seen if k == "a"] == []  # "a" is stuck, "b" is done
    release_a.set()
    await lanes.drain(2)
    assert [i for k, i in seen if k == "a"] == [0, 1, 2]
    assert lanes.pending == 0 and lanes.lanes == 0


async def test_dispatcher_pushes_back_beyond_max_pending() -> None:
    gate = asyncio.Event()

    async def handle(_key: str, _items: list[int]) -> None:
        await gate.wait()

    lanes: Dispatcher[int] = Dispatcher(handle, max_pending=2)
    await lanes.put("a", 1)
    await lanes.put("b", 2)
    third = asyncio.create_task(lanes.put("c", 3))
    await asyncio.sleep(0)
    assert not third.done()
    gate.set()
    await asyncio.wait_for(third, 2)
    await lanes.drain(2)


async def test_batcher_groups_callers_and_isolates_a_failing_item() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise ValueError("unlucky")
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher("t", flush, linger=0.01)
    batcher.start()
    results = await asyncio.gather(
        batcher.submit([1, 2]), batcher.submit([3]), batcher.submit([13]), return_exceptions=True
    )
    await batcher.stop()
    assert results[0] == [10, 20] and results[1] == [30]
    assert isinstance(results[2], ValueError)
    assert calls[0] == [1, 2, 3, 13]  # one batch first, then one by one after the failure


async def test_connection_state_notifies_and_waits() -> None:
    state = ConnectionState()
    seen: list[bool] = []
    remove = state.add_listener(lambda s: seen.append(s.connected))
    waiter = asyncio.create_task(state.wait_for(True, timeout=2))
    state.set_connected()
    await waiter
    state.set_disconnected("broker went away")
    remove()
    state.set_connected()
    assert seen == [True, False]
    assert state.connected and state.last_error is None and state.connects == 2


async def test_batcher_does_not_linger_when_idle() -> None:
    """The linger only groups items that keep coming: an item after a quiet spell (here,
    the very first) is flushed at once, not after an hour."""
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    batcher: Batcher[int, int] = Batcher("t", flush, linger=3600.0)
    batcher.start()
    try:
        assert await batcher.submit([1, 2]) == [1, 2]
        assert calls == [[1, 2]]
    finally:
        batcher.abort()


async def test_batcher_fails_a_whole_batch_at_once_when_the_store_is_unavailable() -> None:
    """A locked or unreachable database fails every item alike: no retry one by one (which
    would wait one lock timeout per item); each caller gets the error and retries itself."""
    calls: list[list[int]] = []
    locked = OperationalError("UPDATE x", {}, Exception("database is locked"))

    async def flush(items: list[int]) -> list[int]:
        calls.append(list(items))
        raise locked

    batcher: Batcher[int, int] = Batcher("t", flush, linger=0.01)
    batcher.start()
    results = await asyncio.gather(
        batcher.submit([1, 2]), batcher.submit([3]), return_exceptions=True
    )
    await batcher.stop()
    assert results == [locked, locked]
    assert calls == [[1, 2, 3]]
    assert first_line(locked) == "OperationalError: (builtins.Exception) database is locked"
