"""The subscriptions of this backend instance: the contract's inbound filters (built in
`backend.domain.topics`), shared when several instances share the work, plus its probe.

`locker/+/state/#` also matches `locker/{u}/state` itself (MQTT 3.1.1 section 4.7.1.2),
so it covers the heartbeat topic and upstream's split `state/heartbeat|compartments|
connection` in one filter. Subscribing to `locker/+/state` as well would make brokers
that deliver once per matching subscription (Mosquitto 2, amqtt) hand us every
heartbeat twice.
"""

from __future__ import annotations

from backend.config import Settings
from backend.domain.topics import inbound_filters, probe_topic

SUBSCRIPTION_QOS = 1


def shared(filter_: str, group: str | None) -> str:
    """`$share/{group}/{filter}` when several backends share the work (MQTT 5), else as is."""
    return f"$share/{group}/{filter_}" if group else filter_


def subscriptions(settings: Settings) -> list[tuple[str, int]]:
    """(filter, QoS) pairs for this backend's settings."""
    group = settings.mqtt_shared_group
    return [
        *(
            (shared(f, group), SUBSCRIPTION_QOS)
            for f in inbound_filters(settings.mqtt_accept_legacy_status)
        ),
        # never shared: the probe proves that this instance's own session receives
        (probe_topic(settings.mqtt_instance_id), SUBSCRIPTION_QOS),
    ]
