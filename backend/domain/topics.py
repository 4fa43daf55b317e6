"""The MQTT topic names of the contract (DESIGN section 3) and their parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

SERVER_STATUS = "server/status"
REGISTER_PREFIX = "locker/register/"
PROVISIONING_REPLY_PREFIX = "locker/provisioning/reply/"

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REDACT_RE = re.compile(r"^(locker/register/)[^/]+")


class TopicKind(StrEnum):
    """What an inbound topic carries."""

    REGISTER = "register"
    RESPONSE = "response"
    LEGACY_STATUS = "status"
    EVENT = "event"
    STATE = "state"
    STATE_HEARTBEAT = "state/heartbeat"
    STATE_COMPARTMENTS = "state/compartments"
    STATE_CONNECTION = "state/connection"


@dataclass(frozen=True)
class ParsedTopic:
    """An inbound topic split into its kind and the bank uuid (or the token for register)."""

    kind: TopicKind
    key: str


class TopicError(ValueError):
    """The topic is not one the backend accepts."""


def command_topic(bank_uuid: str) -> str:
    return f"locker/{bank_uuid}/command"


def reply_topic(client_id: str) -> str:
    return f"{PROVISIONING_REPLY_PREFIX}{client_id}"


def register_topic(token: str) -> str:
    return f"{REGISTER_PREFIX}{token}"


def device_topic(bank_uuid: str, suffix: str) -> str:
    return f"locker/{bank_uuid}/{suffix}"


def is_bank_uuid(text: str) -> bool:
    """Bank uuids are lowercase canonical UUID strings."""
    return bool(_UUID_RE.match(text))


def redact(topic: str) -> str:
    """Hide the provisioning token in a register topic before it reaches a log."""
    return _REDACT_RE.sub(r"\1<redacted>", topic)


_SUFFIXES = {
    "response": TopicKind.RESPONSE,
    "status": TopicKind.LEGACY_STATUS,
    "event": TopicKind.EVENT,
    "state": TopicKind.STATE,
    "state/heartbeat": TopicKind.STATE_HEARTBEAT,
    "state/compartments": TopicKind.STATE_COMPARTMENTS,
    "state/connection": TopicKind.STATE_CONNECTION,
}


def parse_inbound(topic: str) -> ParsedTopic:
    """Classify a topic the backend receives; raise TopicError for anything else."""
    if topic.startswith(REGISTER_PREFIX):
        token = topic[len(REGISTER_PREFIX) :]
        if not token or "/" in token:
            raise TopicError("register topic must carry exactly one token level")
        return ParsedTopic(TopicKind.REGISTER, token)
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != "locker":
        raise TopicError("not a locker topic")
    bank, suffix = parts[1], parts[2]
    kind = _SUFFIXES.get(suffix)
    if kind is None:
        raise TopicError(f"unknown topic kind {suffix[:40]!r}")
    if not is_bank_uuid(bank):
        raise TopicError("topic does not name a bank uuid")
    return ParsedTopic(kind, bank)
