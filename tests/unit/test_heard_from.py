"""HeardFrom: which heartbeats the receive side has seen, before the store has them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from backend.domain.topics import TopicKind
from backend.mqtt.heard import HeardFrom
from backend.mqtt.inbound import Inbound

BANK = "6f1c0d52-1f7e-4c34-9d55-0c4a4c8e5a11"
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
BEAT = json.dumps(
    {"state": "heartbeat", "data": {"timestamp": AT.isoformat(), "uptime_seconds": 5}}
).encode()
WILL = json.dumps({"state": "connection_lost", "timestamp": AT.isoformat()}).encode()


def inbound(kind: TopicKind, payload: bytes, *, retained: bool = False) -> Inbound:
    return Inbound(f"locker/{BANK}/{kind}", kind, BANK, payload, retained, AT)


def test_a_live_heartbeat_is_heard() -> None:
    heard = HeardFrom()
    heard.observe(inbound(TopicKind.STATE_HEARTBEAT, b"{}"))
    assert heard.get(BANK) == AT
    other = HeardFrom()
    other.observe(inbound(TopicKind.STATE, BEAT))
    assert other.get(BANK) == AT


def test_retained_refused_and_other_topics_are_not_life() -> None:
    heard = HeardFrom()
    heard.observe(inbound(TopicKind.STATE_HEARTBEAT, BEAT, retained=True))
    heard.observe(inbound(TopicKind.RESPONSE, BEAT))
    heard.observe(inbound(TopicKind.STATE, b"not json"))
    refused = Inbound(f"locker/{BANK}/x", TopicKind.STATE_HEARTBEAT, BANK, BEAT, False, AT, "no")
    heard.observe(refused)
    assert heard.get(BANK) is None


def test_a_last_will_forgets_the_bank() -> None:
    heard = HeardFrom()
    heard.observe(inbound(TopicKind.STATE, BEAT))
    heard.observe(inbound(TopicKind.STATE, WILL))
    assert heard.get(BANK) is None
    heard.observe(inbound(TopicKind.STATE_HEARTBEAT, BEAT))
    heard.observe(inbound(TopicKind.STATE_CONNECTION, b'{"status": "offline"}'))
    assert heard.get(BANK) is None
