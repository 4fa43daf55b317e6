"""`SnapshotSubscriptions.matching` finds exactly the subscribers upstream's full scan finds."""

from __future__ import annotations

import itertools
import logging
from types import SimpleNamespace
from typing import Any

from amqtt.broker import Broker

from backend.broker.secure_broker import SnapshotSubscriptions

FILTERS = (
    "locker/a/command",
    "locker/b/command",
    "locker/+/state",
    "locker/#",
    "#",
    "+/a/command",
    "server/status",
    "$SYS/broker/uptime",
    "$SYS/#",
    "locker/a/+",
)
TOPICS = (
    "locker/a/command",
    "locker/b/command",
    "locker/c/command",
    "locker/a/state",
    "server/status",
    "$SYS/broker/uptime",
    "other",
)


def _matches(topic: str, a_filter: str) -> bool:
    broker: Any = SimpleNamespace(logger=logging.getLogger("test"))  # all `_matches` uses
    return Broker._matches(broker, topic, a_filter)


def _full_scan(table: SnapshotSubscriptions, topic: str) -> list[Any]:
    return [sub for a_filter, subs in table.items() if _matches(topic, a_filter) for sub in subs]


def test_matching_equals_the_full_scan_as_filters_come_and_go() -> None:
    table = SnapshotSubscriptions()
    for i, a_filter in enumerate(FILTERS):
        table[a_filter] = [(f"session-{i}", i % 3)]
    table["locker/a/command"].append(("session-x", 1))
    for topic in TOPICS:
        assert sorted(table.matching(topic, _matches)) == sorted(_full_scan(table, topic))
    for removed in itertools.islice(FILTERS, 0, None, 2):
        del table[removed]
    table.pop("locker/a/+")
    for topic in TOPICS:
        assert sorted(table.matching(topic, _matches)) == sorted(_full_scan(table, topic))
    assert table.matching("locker/a/command", _matches) == [("session-3", 0), ("session-5", 2)]
    table.clear()
    assert table.matching("locker/a/command", _matches) == []


def test_matching_returns_a_snapshot() -> None:
    table = SnapshotSubscriptions()
    table["locker/a/command"] = [("a", 1)]
    found = table.matching("locker/a/command", _matches)
    table["locker/a/command"].pop()
    assert found == [("a", 1)]
