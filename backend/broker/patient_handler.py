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

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

__all__ = ["PatientBrokerProtocolHandler"]

READER_CANCEL_RETRY = 0.05
"""Seconds between cancellations of a reader loop that has not ended yet."""
READER_CLOSE_WAIT = 1.0
"""Seconds granted to an ended reader loop to close its connection itself."""


class PatientBrokerProtocolHandler(BrokerProtocolHandler):
    """amqtt's broker handler whose outgoing QoS 1 messages wait for their PUBACK and whose
    `stop()` always ends the reader loop."""

    async def stop(self) -> None:
        reader = self._reader_task
        if reader is not None and reader is not asyncio.current_task():
            await stop_reader(reader, self._reader_stopped)
        await super().stop()

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
