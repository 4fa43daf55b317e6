"""PUBACKs sent once a message is handled, not when it arrives (RELIABILITY.md F6).

paho acknowledges a QoS 1 PUBLISH as soon as its `on_message` callback returns, and our
receive side only queues the message there: a process killed with a backlog lost all of
it for good, since the broker already had its PUBACK. With manual acknowledgements
(paho's `manual_ack_set(True)` on aiomqtt's inner client: aiomqtt 2.5 does not wrap it)
every received message carries an `Ack`, and the listener calls it once the message is
finished: committed, refused (and stored as rejected), or given up after the store
retries. Only then does paho send the PUBACK. Until then the broker keeps the message in
flight for our persistent session and sends it again (DUP) when the session resumes, so a
restarted backend handles it; the store's dedup (events by `event_id`, responses by
transaction) makes a second copy harmless.

The broker is to send at most its in-flight window of unacknowledged messages (the
Receive Maximum of our CONNECT, `RECEIVE_MAXIMUM`), the rest waiting in its queue for our
session; Mosquitto 2.0.11 goes past it once PUBACKs flow, so `receive_bound.py` keeps a
bound of our own (RELIABILITY F10).
Manual acknowledgements are used over MQTT 5 only (`connection.manual_acks`): amqtt, which
speaks 3.1.1 only, answers a resumed session's SUBSCRIBE only once what it resends is
acknowledged.

A packet id means something on its own connection only: an `Ack` whose connection has
ended is not sent on the next one (the broker resends that message there, with its own
id). Everything runs on the event loop's thread, where aiomqtt drives paho.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 2000
"""MQTT 5 Receive Maximum of the backend's CONNECT: unacknowledged QoS 1 messages the broker
may have in flight to us (Mosquitto 2.0 takes it instead of its `max_inflight_messages`,
which bounds MQTT 3.1.1 sessions; deploy/*.conf set that to the same value). Four batches of
`ListenerOptions.max_batch` (500): batches still form while earlier ones commit."""


class _PahoAcker(Protocol):
    def ack(self, mid: int, qos: int) -> object: ...


class Ack:
    """Call when the message is finished; sends its PUBACK (once) if its connection is
    still the one it arrived on."""

    __slots__ = ("_acks", "_done", "_mid", "_qos")

    def __init__(self, acks: ConnectionAcks | None, mid: int, qos: int) -> None:
        self._acks = acks
        self._mid = mid
        self._qos = qos
        self._done = False

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        if self._acks is not None:
            self._acks.finished(self._mid, self._qos)


NO_ACK = Ack(None, 0, 0)
"""For messages that need no acknowledgement (tests, QoS 0)."""


class ConnectionAcks:
    """The acknowledgements of one connection: how many messages are held unacknowledged,
    and the PUBACKs for them while the connection lasts."""

    def __init__(
        self,
        client: _PahoAcker | None,
        *,
        on_finished: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client  # None: paho acknowledges on receipt (no manual acks)
        self._on_finished = on_finished
        self.open = True
        self.held = 0
        """Messages received on this connection and not yet finished."""
        self.sent = 0
        self.skipped = 0
        """Finished after their connection ended: the broker sends them again."""

    def take(self, mid: int, qos: int) -> Ack:
        """An Ack for a message just received."""
        self.held += 1
        return Ack(self, mid, qos)

    def finished(self, mid: int, qos: int) -> None:
        self.held -= 1
        self._on_finished()
        if self._client is None or qos == 0:
            return
        if not self.open:
            self.skipped += 1
            return
        try:
            self._client.ack(mid, qos)
        except Exception:  # a broken socket is the connection's business, not the handler's
            log.debug("PUBACK for message %d not sent", mid, exc_info=True)
            return
        self.sent += 1

    def close(self) -> None:
        """The connection ended: acknowledge nothing more on it."""
        self.open = False
