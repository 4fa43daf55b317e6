"""The backend's one MQTT connection: session flags, last will, birth, reconnect loop.

A persistent session: client id `MQTT_CLIENT_ID`, MQTT 3.1.1 `clean_session=False` to the
embedded amqtt broker (3.1.1 only), MQTT 5 without clean start and with a session expiry
to an external broker (`MQTT_PROTOCOL`, default `auto`), so the broker keeps our
subscriptions and queues QoS 1 messages while we are away; MQTT 5 lets every command carry
the Message Expiry Interval (DESIGN section 9). With `MQTT_SHARED_GROUP` set: MQTT 5,
`$share/{group}/...` subscriptions and a clean start
(the group, not one member's session, is what receives; DESIGN section 13). Each
instance then needs its own `MQTT_CLIENT_ID`.

Every connect publishes the birth `{"status":"online"}` retained on the last-will topic
and (re)subscribes; the will `{"status":"offline"}` (retained, QoS 1) tells devices when
we vanish. aiomqtt does not reconnect: `run()` loops with capped exponential backoff.
The socket has TCP_NODELAY set (`SOCKET_OPTIONS`): commands and PUBACKs are small packets
that must not wait for Nagle's algorithm.

Over MQTT 5, inbound QoS 1 messages are acknowledged when the listener has finished them,
not on receipt (`backend/mqtt/acks.py`, RELIABILITY.md F6); with MQTT 3.1.1 (the embedded
amqtt broker, or `MQTT_PROTOCOL=3.1.1`) paho still acknowledges on receipt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from aiomqtt import ProtocolVersion, Will
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backend.config import Settings
from backend.domain.contract import ServerStatus
from backend.mqtt import buffered_reads, paho_speedups
from backend.mqtt.acks import RECEIVE_MAXIMUM, Ack, ConnectionAcks
from backend.mqtt.backoff import Backoff
from backend.mqtt.metrics import Metrics
from backend.mqtt.probe import SelfProbe
from backend.mqtt.receive_bound import ReceiveBound
from backend.mqtt.state import ConnectionState
from backend.mqtt.subscriptions import subscriptions

log = logging.getLogger(__name__)
paho_speedups.install()
PENDING_PUBLISH_WARNING = 1000  # far above a relay batch
SESSION_EXPIRY = 7 * 24 * 3600  # MQTT 5: keep our session (queued answers) a week

MessageCallback = Callable[[aiomqtt.Message, Ack], Awaitable[None]]
"""Gets every received message and its Ack, to call once the message is finished."""
BIRTH_PAYLOAD = ServerStatus(status="online").to_bytes()
EMBEDDED_HOST = "127.0.0.1"
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""TCP_NODELAY: paho sets no socket options, so without it Nagle's algorithm holds each
small MQTT packet until the previous one is ACKed (delayed ACK: ~40 ms per QoS 1 hop)."""


def connect_properties(*, persistent: bool) -> Properties:
    """The MQTT 5 CONNECT properties of the backend's session: how many unacknowledged
    messages the broker may have in flight to us (acks.py), and for a persistent session
    (no clean start) its expiry interval (0 would end it with the connection)."""
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        props.SessionExpiryInterval = SESSION_EXPIRY
    return props


def manual_acks(settings: Settings) -> bool:
    """PUBACK after handling: over MQTT 5 (Mosquitto, the production broker). Not over
    MQTT 3.1.1, which is what amqtt speaks: amqtt serves a resumed session's SUBSCRIBE only
    once every message it resends or queued for it is acknowledged, and we read those only
    after the SUBACK (the embedded one dies with us anyway: nothing to keep for a restart)."""
    return settings.mqtt_v5


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class PublishError(Exception):
    """A publish that did not get the broker's PUBACK (not connected, lost, timed out)."""


class MqttConnection:
    """Connects, subscribes, hands every received message to `on_message`, reconnects."""

    def __init__(
        self,
        settings: Settings,
        on_message: MessageCallback,
        *,
        state: ConnectionState | None = None,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        keepalive: int = 30,
        timeout: float = 10.0,
        on_connected: Callable[[], None] = lambda: None,
        on_disconnected: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.state = state or ConnectionState()
        self.metrics = metrics or Metrics()
        self.v5 = settings.mqtt_v5
        self.shared = settings.mqtt_shared_group is not None
        self.subscriptions = subscriptions(settings)
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._backoff = backoff or Backoff()
        self._keepalive = keepalive
        self._timeout = timeout
        self._password = settings.secret("mqtt_password")
        self._client: aiomqtt.Client | None = None
        self.bound: ReceiveBound | None = None  # the current client's (a new one each session)
        self._lost = asyncio.Event()
        self.probe = SelfProbe(
            settings.mqtt_instance_id, settings.mqtt_probe_interval, settings.mqtt_probe_timeout
        )
        self.manual_acks = manual_acks(settings)
        self.acks = ConnectionAcks(None)
        self.acks.close()
        self.probe.held = lambda: self.acks.held if self.acks.open else 0

    # ----- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and receive until cancelled; after any loss, back off and start over."""
        while True:
            error = await self._session()
            self.state.set_disconnected(error)
            delay = self._backoff.next()
            log.warning("MQTT broker connection: %s; reconnecting in %.1f s", error, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> str:
        """One connection from CONNECT to its loss; returns why it ended."""
        client = self._make_client()
        was_connected = False
        try:
            async with client:
                # What arrives meanwhile waits in aiomqtt's queue: SUBACK and PUBACK must
                # not queue behind handling a resumed session's backlog.
                refused = await self._subscribe(client)
                await client.publish(
                    self.settings.mqtt_last_will_topic, BIRTH_PAYLOAD, qos=1, retain=True
                )
                acks = self.acks = ConnectionAcks(
                    # aiomqtt 2.5 does not wrap paho's manual acks (aiomqtt#345): its inner client
                    client._client if self.manual_acks else None,
                    on_finished=self.probe.progress,
                )
                receive = asyncio.create_task(self._receive(client, acks), name="mqtt-receive")
                try:
                    self._client = client
                    self._lost = asyncio.Event()
                    was_connected = True
                    self._backoff.reset()
                    self.metrics.connects += 1
                    self.state.set_connected(
                        f"subscriptions refused: {', '.join(refused)}" if refused else None
                    )
                    self._on_connected()
                    log.info(
                        "connected to MQTT broker %s:%d as %s (%s)",
                        self._host,
                        self.settings.mqtt_port,
                        self.settings.backend_client_id,
                        "MQTT 5, shared group"
                        if self.shared
                        else "MQTT 5, persistent session"
                        if self.v5
                        else "MQTT 3.1.1, persistent session",
                    )
                    lost_session = await self._receive_while_probed(receive)
                finally:
                    acks.close()
                    receive.cancel()
                    await asyncio.gather(receive, return_exceptions=True)
                if lost_session is not None:
                    self.metrics.probe_failures += 1
                    return lost_session
            return "disconnected by the broker"
        except aiomqtt.MqttError as exc:
            if _being_cancelled():
                # aiomqtt's __aexit__ can turn our cancellation into an MqttError (a failed
                # DISCONNECT); do not let that restart the loop.
                raise asyncio.CancelledError from exc
            return str(exc) or exc.__class__.__name__
        finally:
            self._client = None
            self._lost.set()
            if was_connected:
                self.metrics.disconnects += 1
                self._on_disconnected()

    async def _receive_while_probed(self, receive: asyncio.Task[None]) -> str | None:
        """Receive until the connection ends (None) or the self-probe stops coming back
        (the reason): the broker may drop our session and keep the socket open."""
        self.probe.reset()
        probe = asyncio.create_task(self.probe.watch(self._publish_probe), name="mqtt-probe")
        try:
            done, _ = await asyncio.wait({receive, probe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        if receive in done:
            receive.result()  # an MqttError ends the session as before
            return None
        if probe.cancelled():
            return None
        error = probe.exception()
        if error is not None:
            return f"self-probe failed: {error}"
        return probe.result()

    async def _receive(self, client: aiomqtt.Client, acks: ConnectionAcks) -> None:
        bound = self.bound
        if bound is not None:
            bound.arm()  # not before: the setup's SUBACKs and PUBACK come after the backlog
        async for message in client.messages:
            if bound is not None:
                bound.taken()
            await self._deliver(message, acks.take(message.mid, message.qos))

    async def _publish_probe(self, topic: str, payload: bytes) -> None:
        # no timeout of aiomqtt's own: the probe decides how long a PUBACK may take (it
        # waits while other traffic flows, probe.py)
        await self.publish(topic, payload, qos=1, timeout=math.inf)

    async def _deliver(self, message: aiomqtt.Message, ack: Ack) -> None:
        if self.probe.is_probe(message.topic.value):
            payload = message.payload
            self.probe.received(payload if isinstance(payload, bytes) else b"")
            ack()
            return
        self.probe.activity(busy=True)
        try:
            await self._on_message(message, ack)
        except asyncio.CancelledError:
            raise  # not acknowledged: the broker sends it again
        except Exception:
            # A bug in a handler must not take the connection down with it, nor hold the
            # message (and a slot of the broker's in-flight window) for ever.
            log.exception("inbound message handler failed")
            ack()
        finally:
            self.probe.activity(busy=False)

    async def _subscribe(self, client: aiomqtt.Client) -> list[str]:
        """Subscribe to every filter; returns the filters the broker refused."""
        granted = await client.subscribe(self.subscriptions)
        codes = [getattr(code, "value", code) for code in granted]
        refused = [
            f for (f, _qos), code in zip(self.subscriptions, codes, strict=False) if code >= 0x80
        ]
        if refused:
            # The broker's ACL said no: keep the connection (publishing still works), say so.
            log.error("MQTT broker refused the subscriptions %s", ", ".join(refused))
        return refused

    @property
    def _host(self) -> str:
        return self.settings.mqtt_host or EMBEDDED_HOST

    def _make_client(self) -> aiomqtt.Client:
        will = Will(
            topic=self.settings.mqtt_last_will_topic,
            payload=self.settings.mqtt_last_will_message.encode(),
            qos=1,
            retain=True,
        )
        common: dict[str, Any] = {
            "hostname": self._host,
            "port": self.settings.mqtt_port,
            "username": self.settings.mqtt_user,
            "password": self._password,
            "identifier": self.settings.backend_client_id,
            "will": will,
            "keepalive": self._keepalive,
            "timeout": self._timeout,
            "socket_options": SOCKET_OPTIONS,
        }
        if self.v5 and self.shared:
            client = aiomqtt.Client(
                protocol=ProtocolVersion.V5,
                clean_start=True,
                properties=connect_properties(persistent=False),
                **common,
            )
        elif self.v5:
            client = aiomqtt.Client(
                protocol=ProtocolVersion.V5,
                clean_start=False,  # a persistent session
                properties=connect_properties(persistent=True),
                **common,
            )
        else:
            client = aiomqtt.Client(protocol=ProtocolVersion.V311, clean_session=False, **common)
        # The relay pipelines a batch of publishes; aiomqtt warns (one log line per publish)
        # above 10 awaiting their PUBACK.
        client.pending_calls_threshold = PENDING_PUBLISH_WARNING
        buffered_reads.attach(client._client)
        # the broker's window does not bound what we hold (RELIABILITY F10): our own bound
        self.bound = ReceiveBound(client)
        if self.manual_acks:
            client._client.manual_ack_set(True)  # aiomqtt#345: not wrapped by aiomqtt 2.5
        return client

    # ----- publishing --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self.state.connected

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish and return after the PUBACK (QoS 1); PublishError if that cannot happen."""
        client, lost = self._client, self._lost
        if client is None or lost.is_set():
            raise PublishError("not connected to the MQTT broker")
        pub = asyncio.ensure_future(
            client.publish(
                topic,
                payload,
                qos=qos,
                retain=retain,
                properties=properties,
                timeout=timeout or self._timeout,
            )
        )
        lost_wait = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait({pub, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost_wait.cancel()
            if not pub.done():
                pub.cancel()
        if pub in done:
            try:
                pub.result()
            except aiomqtt.MqttError as exc:
                raise PublishError(str(exc) or exc.__class__.__name__) from exc
            return
        raise PublishError("connection lost before the PUBACK")

    async def say_goodbye(self, timeout: float = 2.0) -> None:
        """Publish the last-will message ourselves before a clean disconnect (the broker
        drops the will then). Best effort."""
        try:
            await self.publish(
                self.settings.mqtt_last_will_topic,
                self.settings.mqtt_last_will_message.encode(),
                qos=1,
                retain=True,
                timeout=timeout,
            )
        except PublishError as exc:
            log.info("could not publish the offline status: %s", exc)
