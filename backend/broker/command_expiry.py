"""The embedded broker's own expiry of commands (DESIGN section 9).

amqtt speaks MQTT 3.1.1 only: no Message Expiry Interval. A command queued for an offline
device, or left unacknowledged in its session and retransmitted when it reconnects, would
be delivered however late; the upstream client ignores `expires_at` and would open the
door. So the broker itself reads `expires_at` from a command's payload and drops the
message once it has passed: at delivery of a queued message (`is_expired_command`) and
before the retransmission on resume (`drop_expired_inflight`). Anything that is not a
command, or carries no readable `expires_at`, passes unchanged.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from backend.domain.timeutil import parse_iso
from backend.domain.topics import is_command_topic

log = logging.getLogger(__name__)
MAX_PAYLOAD = 65536


def command_expires_at(topic: str, data: bytes | bytearray | None) -> datetime | None:
    """The `expires_at` of a `locker/{u}/command` payload, or None."""
    if not is_command_topic(topic) or not data:
        return None
    if len(data) > MAX_PAYLOAD:
        return None
    try:
        payload = json.loads(bytes(data))
        value = payload.get("expires_at") if isinstance(payload, dict) else None
        return parse_iso(value) if isinstance(value, str) else None
    except (ValueError, TypeError):
        return None


def is_expired_command(
    topic: str, data: bytes | bytearray | None, now: datetime | None = None
) -> bool:
    expires_at = command_expires_at(topic, data)
    if expires_at is None:
        return False
    expired = (now or datetime.now(UTC)) >= expires_at
    if expired:
        log.info("expired command on %s dropped by the broker", topic)
    return expired


def drop_expired_inflight(session: Any, now: datetime | None = None) -> int:
    """Remove expired commands from a resuming session's unacknowledged messages (they
    would be retransmitted as soon as its handler starts); returns how many."""
    inflight = getattr(session, "inflight_out", None)
    if not inflight:
        return 0
    dropped = 0
    for packet_id, message in list(inflight.items()):
        if is_expired_command(getattr(message, "topic", ""), getattr(message, "data", None), now):
            inflight.pop(packet_id, None)
            dropped += 1
    return dropped
