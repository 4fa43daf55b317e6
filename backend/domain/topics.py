"""The MQTT topic grammar of the contract (DESIGN sections 3 and 4): every topic name and
filter the backend, the ACL and the brokers use is built here, and inbound topics are
parsed here. No other module spells a topic literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

ANY: Final = "+"
"""The single-level wildcard."""
REST: Final = "#"
"""The multi-level wildcard (the whole last level)."""

LOCKER_ROOT: Final = "locker"
SERVER_STATUS: Final = "server/status"
INSTANCE_STATUS_PREFIX: Final = SERVER_STATUS + "/"
PROBE_PREFIX: Final = "server/probe/"
REGISTER_PREFIX: Final = f"{LOCKER_ROOT}/register/"
PROVISIONING_REPLY_PREFIX: Final = f"{LOCKER_ROOT}/provisioning/reply/"
COMMAND_SUFFIX: Final = "command"

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


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


def device_topic(bank_uuid: str, suffix: str) -> str:
    """`locker/{u}/{suffix}`; `bank_uuid` may be `+` for a filter over every bank."""
    return f"{LOCKER_ROOT}/{bank_uuid}/{suffix}"


def command_topic(bank_uuid: str) -> str:
    return f"{LOCKER_ROOT}/{bank_uuid}/{COMMAND_SUFFIX}"


def reply_topic(client_id: str) -> str:
    return f"{PROVISIONING_REPLY_PREFIX}{client_id}"


def register_topic(token: str) -> str:
    return f"{REGISTER_PREFIX}{token}"


def instance_status_topic(instance_id: str) -> str:
    """`server/status/{instance}`: one backend instance's own status."""
    return f"{INSTANCE_STATUS_PREFIX}{instance_id}"


def probe_topic(instance_id: str) -> str:
    """`server/probe/{instance}`: the self-probe of one backend instance."""
    return f"{PROBE_PREFIX}{instance_id}"


def is_command_topic(topic: str) -> bool:
    """True for `locker/{anything}/command` (what a broker checks for expiry)."""
    return topic.startswith(LOCKER_ROOT + "/") and topic.endswith("/" + COMMAND_SUFFIX)


# ----- filters (subscriptions and ACL patterns) -------------------------------------------

ALL_LOCKER_TOPICS: Final = f"{LOCKER_ROOT}/{REST}"
ANY_REGISTRATION: Final = register_topic(ANY)
ANY_COMMAND: Final = command_topic(ANY)
ANY_PROVISIONING_REPLY: Final = reply_topic(ANY)
ANY_INSTANCE_STATUS: Final = instance_status_topic(ANY)
ANY_PROBE: Final = probe_topic(ANY)


_STATE: Final = TopicKind.STATE.value
_BELOW_STATE: Final = f"{_STATE}/{REST}"
_RESPONSE: Final = TopicKind.RESPONSE.value
_EVENT: Final = TopicKind.EVENT.value
_LEGACY_STATUS: Final = TopicKind.LEGACY_STATUS.value


def device_publish_topics(bank_uuid: str, legacy_status: bool) -> tuple[str, ...]:
    """What a device (or, with `+`, every device) publishes: state (and below it, for
    upstream's split `state/heartbeat|compartments|connection`), responses, events, and
    the legacy status alias while it is accepted. (On the hook's path: concatenations.)"""
    base = f"{LOCKER_ROOT}/{bank_uuid}/"
    published = (base + _STATE, base + _BELOW_STATE, base + _RESPONSE, base + _EVENT)
    return (*published, base + _LEGACY_STATUS) if legacy_status else published


def inbound_filters(accept_legacy_status: bool) -> list[str]:
    """The filters the backend subscribes to: registrations, responses, legacy status,
    events, state. `locker/+/state/#` also matches `locker/{u}/state` itself (MQTT 3.1.1
    section 4.7.1.2), so one filter covers the heartbeat and the split state topics."""
    filters = [ANY_REGISTRATION, device_topic(ANY, TopicKind.RESPONSE.value)]
    if accept_legacy_status:
        filters.append(device_topic(ANY, TopicKind.LEGACY_STATUS.value))
    filters += [
        device_topic(ANY, TopicKind.EVENT.value),
        device_topic(ANY, f"{TopicKind.STATE.value}/{REST}"),
    ]
    return filters


def is_bank_uuid(text: str) -> bool:
    """Bank uuids are lowercase canonical UUID strings."""
    return bool(_UUID_RE.match(text))


_SUFFIXES = {kind.value: kind for kind in TopicKind if kind is not TopicKind.REGISTER}


def parse_inbound(topic: str) -> ParsedTopic:
    """Classify a topic the backend receives; raise TopicError for anything else."""
    if topic.startswith(REGISTER_PREFIX):
        token = topic[len(REGISTER_PREFIX) :]
        if not token or "/" in token:
            raise TopicError("register topic must carry exactly one token level")
        return ParsedTopic(TopicKind.REGISTER, token)
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != LOCKER_ROOT:
        raise TopicError("not a locker topic")
    bank, suffix = parts[1], parts[2]
    kind = _SUFFIXES.get(suffix)
    if kind is None:
        raise TopicError(f"unknown topic kind {suffix[:40]!r}")
    if not is_bank_uuid(bank):
        raise TopicError("topic does not name a bank uuid")
    return ParsedTopic(kind, bank)
