"""A resumed session that has lost its subscriptions says so (issue 13).

Subscriptions are not persisted (`persistence.py`: amqtt restores them without the
username, so the hook would refuse every one). After a broker restart the stored sessions
come back without any subscription, yet amqtt answers the client's reconnect with
"session present": a client that trusts it (the upstream locker-client, mqtt.js with
`clean: false`, resubscribes only when the session is *not* present) never subscribes
again and goes deaf to its commands.

Here a resumed session that holds no subscription is reported as *not* present
(CONNACK session-present 0): MQTT 3.1.1 then obliges the client to set up its
subscriptions again. Messages queued for the session are still delivered. A session
whose subscriptions are alive (the broker kept running) is reported present as before.
"""

from __future__ import annotations

import logging

from amqtt.session import Session

from backend.broker.secure_broker import SecureBroker

log = logging.getLogger(__name__)


def holds_subscriptions(
    subscriptions: dict[str, list[tuple[Session, int]]], session: Session
) -> bool:
    """Whether any topic filter of the broker is subscribed by `session`."""
    return any(
        subscriber is session or subscriber.client_id == session.client_id
        for subscribers in subscriptions.values()
        for subscriber, _qos in subscribers
    )


class SessionAwareBroker(SecureBroker):
    """SecureBroker whose CONNACK never claims a session that lost its subscriptions."""

    def _session_ready(self, session: Session) -> None:
        if session.parent == 1 and not holds_subscriptions(self._subscriptions, session):
            session.parent = 0
            log.info(
                "resumed session of %s has no subscriptions (restored after a restart): "
                "reported as new so the client subscribes again",
                session.client_id,
            )
