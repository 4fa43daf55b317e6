"""The topic filters the backend subscribes to, and the identity check for client ids.

`locker/+/state/#` also matches `locker/{u}/state` itself (MQTT 3.1.1 section 4.7.1.2),
so it covers the heartbeat topic and upstream's split `state/heartbeat|compartments|
connection` in one filter. Subscribing to `locker/+/state` as well would make brokers
that deliver once per matching subscription (Mosquitto 2, amqtt) hand us every
heartbeat twice.
"""

from __future__ import annotations

from backend.config import Settings
from backend.mqtt.probe import probe_topic

SUBSCRIPTION_QOS = 1
_FORBIDDEN_IN_IDENTITY = frozenset("/+#\x00")


def topic_filters(accept_legacy_status: bool) -> list[str]:
    """The plain filters: registrations, responses, legacy status, events, state."""
    filters = ["locker/register/+", "locker/+/response"]
    if accept_legacy_status:
        filters.append("locker/+/status")
    filters += ["locker/+/event", "locker/+/state/#"]
    return filters


def shared(filter_: str, group: str | None) -> str:
    """`$share/{group}/{filter}` when several backends share the work (MQTT 5), else as is."""
    return f"$share/{group}/{filter_}" if group else filter_


def subscriptions(settings: Settings) -> list[tuple[str, int]]:
    """(filter, QoS) pairs for this backend's settings."""
    group = settings.mqtt_shared_group
    return [
        *(
            (shared(f, group), SUBSCRIPTION_QOS)
            for f in topic_filters(settings.mqtt_accept_legacy_status)
        ),
        # never shared: the probe proves that this instance's own session receives
        (probe_topic(settings.mqtt_instance_id), SUBSCRIPTION_QOS),
    ]


def valid_identity(value: str) -> bool:
    """A client id or username usable as one topic level: non-empty, no `/ + #` or NUL,
    no other control characters."""
    if not value or value != value.strip():
        return False
    return not any(ch in _FORBIDDEN_IN_IDENTITY or ord(ch) < 0x20 or ch == "\x7f" for ch in value)
