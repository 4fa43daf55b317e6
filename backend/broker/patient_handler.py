"""QoS 1 deliveries that stay in flight until the subscriber acknowledges them.

amqtt 0.12.1 (`ProtocolHandler._handle_qos1_message_flow`) waits 5 s for the PUBACK of a
QoS 1 PUBLISH it sent; past that it logs "Timeout waiting for PUBACK", *removes the message
from the session's in-flight store* and gives up. A subscriber that is slow for a moment (the
backend on a loaded machine) still gets the PUBLISH and acknowledges it late ("Received
PUBACK for unknown pending message"), but if its connection drops before it has read the
message, the broker has nothing left to send again on resume: the delivery is lost. MQTT
3.1.1 (4.4) keeps an unacknowledged QoS 1 message until its PUBACK and resends it when the
session resumes.

`PatientBrokerProtocolHandler` waits for the PUBACK without a deadline and only then drops
the message from `inflight_out`. When the connection ends first (the handler stops and
cancels its waiters), the message stays in flight and amqtt's `_retry_deliveries` resends it
(DUP) when the persistent session reconnects.

Messages still in flight when a session resumes are sent again (DUP) without holding up the
connection. Upstream's `start()` (`_retry_deliveries`) resends each one as a task wrapped in
`wait_for(..., 10)` and awaits them all before the client's message loop starts: a backend
reconnecting with many unacknowledged deliveries (a loaded machine, the self-probe giving up)
was not served at all for up to 10 s, its probe failed again, it reconnected again, and every
timed-out retry ended as a "Task exception was never retrieved" traceback formatted into the
log (13 % of the broker's CPU in a 1,000-bank run). Here the resends are started in order
(their PUBLISHes go out before any new delivery, which is queued behind them on the
connection's write lock) and waited for like any delivery: until the PUBACK, or until the
connection ends, when they stay in flight for the next resume.

`stop()` also makes sure the connection's reader loop really ends (RELIABILITY.md F8).
Upstream cancels the reader task once and then waits, without a deadline, for the loop to
say it stopped. The loop reads each packet through `asyncio.wait_for`, and Python 3.11's
`wait_for` swallows a cancellation that arrives in the same loop iteration as the read's
result (it returns the result instead, python/cpython#86296, fixed in 3.12): the loop goes
on reading as if nothing happened and `stop()` hangs for as long as the peer stays
connected. A take-over (a CONNECT under a client id that is connected) stops the old
connection's handler before it answers, so the new client got no CONNACK at all when its
CONNECT met a packet from the old connection (the backend PUBACKing a delivery). Here the
cancellation is repeated until the loop has ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

__all__ = ["PatientBrokerProtocolHandler"]

log = logging.getLogger(__name__)

READER_CANCEL_RETRY = 0.05
"""Seconds between cancellations of a reader loop that has not ended yet."""
READER_CLOSE_WAIT = 1.0
"""Seconds granted to an ended reader loop to close its connection itself."""


class PatientBrokerProtocolHandler(BrokerProtocolHandler):
    """amqtt's broker handler whose outgoing QoS 1 messages wait for their PUBACK and whose
    `stop()` always ends the reader loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retries: set[asyncio.Future[None]] = set()

    async def stop(self) -> None:
        reader = self._reader_task
        if reader is not None and reader is not asyncio.current_task():
            await stop_reader(reader, self._reader_stopped)
        await super().stop()
        for retry in list(self._retries):
            retry.cancel()

    async def _retry_deliveries(self) -> None:
        """Resend what is still in flight (in order), not waiting for the acknowledgements."""
        if self.session is None:
            raise AMQTTError("Session is not initialized.")
        in_flight = [*self.session.inflight_in.values(), *self.session.inflight_out.values()]
        for message in in_flight:
            retry = asyncio.ensure_future(self._handle_message_flow(message))
            self._retries.add(retry)
            retry.add_done_callback(self._retry_done)

    def _retry_done(self, retry: asyncio.Future[None]) -> None:
        self._retries.discard(retry)
        if not retry.cancelled() and retry.exception() is not None:
            log.debug("a resent delivery failed: %s", type(retry.exception()).__name__)

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        if app_message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(app_message)
            return
        if app_message.qos != QOS_1:
            raise ValueError(f"Expected QOS_1 message, got QOS_{app_message.qos}")
        packet_id = app_message.packet_id
        if packet_id is None:
            raise ValueError("Packet ID is not set")
        if app_message.puback_packet:
            raise AMQTTError(f"Message '{packet_id}' has already been acknowledged")
        if self.session is None:
            raise AMQTTError("Session is not initialized.")
        if packet_id not in self.session.inflight_out and isinstance(
            app_message, OutgoingApplicationMessage
        ):
            self.session.inflight_out[packet_id] = app_message
        if app_message.publish_packet is not None:
            publish_packet = app_message.build_publish_packet(dup=True)  # a retry
        else:
            publish_packet = app_message.build_publish_packet()
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(publish_packet)
            app_message.publish_packet = publish_packet
            app_message.puback_packet = await waiter
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                self._puback_waiters.pop(packet_id, None)
        # Acknowledged: only now is the message no longer in flight.
        self.session.inflight_out.pop(packet_id, None)


async def stop_reader(reader: asyncio.Task[None], stopped: asyncio.Event) -> None:
    """Cancel `reader` until its loop has ended (`stopped` set, or the task done), then give it
    up to `READER_CLOSE_WAIT` seconds to finish closing its connection, so that upstream's
    `stop()` that follows finds nothing left to cancel."""
    while not reader.done() and not stopped.is_set():
        reader.cancel()
        await asyncio.wait([reader], timeout=READER_CANCEL_RETRY)
    if not reader.done():
        await asyncio.wait([reader], timeout=READER_CLOSE_WAIT)
