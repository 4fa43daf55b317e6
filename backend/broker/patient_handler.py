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
"""

from __future__ import annotations

import asyncio

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

__all__ = ["PatientBrokerProtocolHandler"]


class PatientBrokerProtocolHandler(BrokerProtocolHandler):
    """amqtt's broker handler whose outgoing QoS 1 messages wait for their PUBACK."""

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
