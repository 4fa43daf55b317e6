"""One received MQTT message, classified by its topic, before validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import aiomqtt

from backend.domain.topics import ParsedTopic, TopicError, TopicKind, parse_inbound
from backend.mqtt.acks import NO_ACK, Ack

INVALID_LANE = "!invalid"
REGISTER_LANE = "!register"


@dataclass(frozen=True)
class Inbound:
    """What arrived: topic, kind and key (bank uuid, or the token of a registration),
    raw payload, the retain flag, when, why the topic alone is already refused, and the
    acknowledgement to send once it is finished (stored, refused or given up)."""

    topic: str
    kind: TopicKind | None
    key: str
    payload: bytes
    retained: bool
    received_at: datetime
    problem: str | None = None
    ack: Ack = field(default=NO_ACK, compare=False, repr=False)

    @property
    def lane(self) -> str:
        """Messages of one lane are handled in arrival order."""
        if self.problem is not None or self.kind is None:
            return INVALID_LANE
        if self.kind is TopicKind.REGISTER:
            return REGISTER_LANE
        return self.key

    @property
    def label(self) -> str:
        """The kind for metrics and logs (`invalid_topic` when the topic is refused)."""
        return str(self.kind) if self.kind is not None else "invalid_topic"


def payload_bytes(payload: object) -> bytes:
    """aiomqtt hands bytes; be safe with the other PayloadType variants."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def classify(
    message: aiomqtt.Message,
    received_at: datetime,
    *,
    accept_legacy_status: bool,
    ack: Ack = NO_ACK,
) -> Inbound:
    """Read the topic; a topic the backend does not accept becomes a refused Inbound."""
    topic = message.topic.value
    payload = payload_bytes(message.payload)
    retained = bool(message.retain)
    try:
        parsed: ParsedTopic = parse_inbound(topic)
    except TopicError as exc:
        return Inbound(topic, None, "", payload, retained, received_at, str(exc), ack)
    problem = None
    if parsed.kind is TopicKind.LEGACY_STATUS and not accept_legacy_status:
        problem = "legacy status topic is disabled (MQTT_ACCEPT_LEGACY_STATUS=false)"
    return Inbound(topic, parsed.kind, parsed.key, payload, retained, received_at, problem, ack)
