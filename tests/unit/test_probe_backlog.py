"""The self-probe under load: its measure of how far behind the broker the receive side is
(the sweeper calls no bank silent for heartbeats that may still be queued for us), and a
probe whose PUBACK is slow while other traffic flows is not taken for a lost session."""

from __future__ import annotations

import asyncio

from backend.mqtt.probe import SelfProbe
from tests.support.waiting import until


async def test_backlog_is_the_last_round_trip_or_the_outstanding_probe_if_longer() -> None:
    probe = SelfProbe("instance-a", interval=0.01, timeout=5.0)
    assert probe.backlog() == 0.0
    published: list[bytes] = []
    sent = asyncio.Event()

    async def publish(_topic: str, payload: bytes) -> None:
        published.append(payload)
        sent.set()

    watcher = asyncio.create_task(probe.watch(publish))
    try:
        await asyncio.wait_for(sent.wait(), 5)
        sent.clear()
        # the probe is under way: the backlog grows with it
        await until(probe.backlog, lambda b: b >= 0.05, "the backlog grows", interval=0.01)
        probe.received(published[-1])
        round_trip = probe.backlog()
        assert round_trip >= 0.05  # kept after it came back ...
        await asyncio.wait_for(sent.wait(), 5)  # ... until the next probe, sent at once
        probe.received(published[-1])
        assert probe.backlog() < round_trip  # the quick one replaces it
        probe.reset()
        assert probe.backlog() == 0.0  # a new connection starts afresh
    finally:
        watcher.cancel()


async def test_a_slow_puback_while_traffic_flows_is_not_a_lost_session() -> None:
    probe = SelfProbe("instance-a", interval=0.01, timeout=0.05)
    never = asyncio.Event()
    published: list[bytes] = []

    async def publish(_topic: str, payload: bytes) -> None:
        published.append(payload)
        await never.wait()  # the PUBACK does not come

    probe.activity(True)  # a message is being handled: the session is served
    watcher = asyncio.create_task(probe.watch(publish))
    try:
        await until(lambda: probe.backlog(), lambda b: b > 0.2, "several timeouts passed")
        assert not watcher.done() and probe.failures == 0
        probe.activity(False)  # nothing flows any more: now it is a lost session
        reason = await asyncio.wait_for(watcher, 5)
    finally:
        watcher.cancel()
    assert reason == "self-probe was not even acknowledged within 0.05 s (session lost)"
    assert probe.failures == 1 and len(published) == 1
