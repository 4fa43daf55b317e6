"""The embedded broker's class: `SecureBroker` and `SessionAwareBroker` (issue 13) with
the promises of issue 14 kept (DESIGN sections 4 and 12).

1. **Every PUBACKed message reaches the subscribers** (`_client_message_loop`). amqtt
   0.12.1 PUBACKs a QoS 1 publish as soon as it is queued on the session's
   `delivered_message_queue`; its client loop then waits on "next message" and
   "disconnect" together and, when both are ready, handles the disconnect first (stopping
   the handler and sending the will) and leaves the loop: every message still in the
   queue is dropped although its sender got the PUBACK (measured: 19 of 50 door events
   lost by a client that disconnects right after publishing). Here received messages are
   always handled before the disconnect: the one already taken, then the rest of the queue.
   The loop is upstream's otherwise (same waiters and handlers).
2. **Connection limits** (`stream_connected`): `backend.broker.limits` frames every
   connection's packets: CONNECT timeout, MQTT 3.1.1 only (MQTT 5 gets CONNACK
   "unacceptable protocol version"), maximum packet size, connections per address.
4. **Registrations per source address** (`_handle_message_delivery`): past
   `MQTT_REGISTRATIONS_PER_ADDRESS` a minute, a `locker/register/+` publish is dropped here
   (the backend never learns addresses): a flood of guesses costs no outbox row, no reply.
3. **Identity changes** (`_before_session_change`, called by SecureBroker before a CONNECT
   touches the session table): a client still connected under the client id is
   disconnected for real (upstream deleted its session but left its socket open, so the
   backend, hijacked by a CONNECT with its client id, heard nothing more while it looked
   connected), and a session left under that id by another username (the provisioning
   account) is discarded, never inherited (DESIGN section 4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from amqtt.contexts import BrokerConfig
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from backend.broker.batched_writer import BatchedWriter
from backend.broker.limits import (
    AddressGate,
    ConnectRefused,
    LimitedReader,
    Limits,
    RegistrationGate,
)
from backend.broker.monitor import ClientMonitorPlugin
from backend.broker.resumed_session import SessionAwareBroker
from backend.domain.topics import REGISTER_PREFIX
from backend.log_throttle import LogThrottle

log = logging.getLogger(__name__)
TAKE_OVER_WAIT = 2.0
"""Seconds a take-over may spend closing the old connection before the CONNECT goes on."""


class HardenedBroker(SessionAwareBroker):
    """The embedded broker's class; see the module docstring."""

    def __init__(
        self,
        config: BrokerConfig | dict[str, Any],
        *,
        limits: Limits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.limits = limits or Limits()
        self.gate = AddressGate(self.limits.max_connections_per_address)
        self.registrations = RegistrationGate(self.limits.registrations_per_address)
        self.refused_connections: dict[str, int] = {
            "connect_timeout": 0,
            "protocol_version": 0,
            "packet_too_large": 0,
            "per_address_limit": 0,
            "malformed": 0,
            "registration_rate_per_address": 0,
        }
        self._refusal_log = LogThrottle("refused MQTT connections", logger=log)
        self._background: set[asyncio.Future[None]] = set()

    # -- 2. limits below amqtt's parser -----------------------------------------------------

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.gate.enter(address):
            self._refuse("per_address_limit", address, "too many connections from this address")
            writer.close()
            return
        try:
            limited = LimitedReader(
                reader,
                self.limits.max_packet_size,
                lambda exc: self._refuse(_code(exc), address, str(exc)),
            )
            try:
                await limited.read_connect(self.limits.connect_timeout)
            except ConnectRefused as exc:
                self._refuse(_code(exc), address, str(exc))
                if exc.reply:
                    writer.write(exc.reply)
                    try:
                        async with asyncio.timeout(1.0):
                            await writer.drain()
                    except (TimeoutError, OSError):
                        pass
                writer.close()
                return
            await self._client_connected(listener_name, limited, AbortableWriter(writer))
        finally:
            self.gate.leave(address)

    def _refuse(self, code: str, address: str, reason: str) -> None:
        self.refused_connections[code] = self.refused_connections.get(code, 0) + 1
        if self._refusal_log.allow():
            log.warning("refused an MQTT connection from %s: %s", address or "?", reason)

    # -- 4. registrations per source address ----------------------------------------------

    async def _handle_message_delivery(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[Any],
    ) -> bool:
        message = wait_deliver.result() if not wait_deliver.cancelled() else None
        topic = getattr(message, "topic", None) or ""
        if topic.startswith(REGISTER_PREFIX):
            address = str(client_session.remote_address or "")
            if not self.registrations.allow(address, time.monotonic()):
                self._refuse("registration_rate_per_address", address, "too many registrations")
                return True  # dropped (it was PUBACKed): the connection stays
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    # -- 3. a CONNECT about to replace or resume a session ----------------------------------

    async def _before_session_change(self, incoming: Session) -> None:
        entry = self._sessions.get(incoming.client_id or "")
        if entry is None:
            return
        existing, handler = entry
        if existing.transitions.is_connected() and handler is not None:
            log.info("client id %s connected again: closing its old connection", incoming.client_id)
            await self._take_over(existing, handler)
        # A session restored from the broker's store has no username (amqtt does not keep
        # it): not known to be another user's, so it is resumed as before.
        if existing.username is not None and existing.username != incoming.username:
            log.info(
                "client id %s now used by another username: its old session is discarded",
                incoming.client_id,
            )
            await self._delete_session(incoming.client_id or "")

    async def _take_over(self, existing: Session, handler: BrokerProtocolHandler) -> None:
        """Close the old connection of a client id within `TAKE_OVER_WAIT` seconds in all: the
        new CONNECT waits for this and must get its CONNACK (RELIABILITY.md F8). Should the old
        handler not stop in half that time, its socket is aborted (its reader then ends at the
        EOF) and the rest of the time is granted; after that the CONNECT goes on regardless."""
        deadline = asyncio.get_running_loop().time() + TAKE_OVER_WAIT
        stopping = asyncio.ensure_future(handler.stop())
        self._background.add(stopping)
        stopping.add_done_callback(self._background.discard)
        done, _ = await asyncio.wait([stopping], timeout=TAKE_OVER_WAIT / 2)
        if not done:
            log.warning("old connection of %s is slow to stop: aborting it", existing.client_id)
            if isinstance(handler.writer, AbortableWriter):
                handler.writer.abort()
        monitor = self.plugins_manager.get_plugin(ClientMonitorPlugin.__name__)
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            async with asyncio.timeout(remaining):
                await asyncio.shield(stopping)
                if isinstance(monitor, ClientMonitorPlugin):  # woken at each disconnect
                    await monitor.wait_for(lambda: not existing.transitions.is_connected(), 60)
        except TimeoutError:
            log.warning("old connection of %s did not finish closing", existing.client_id)

    # -- 1. messages before the disconnect --------------------------------------------------

    async def _client_message_loop(
        self, client_session: Session, handler: BrokerProtocolHandler
    ) -> None:
        disconnect_waiter = asyncio.ensure_future(handler.wait_disconnect())
        subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        connected = True
        while connected:
            try:
                done, _ = await asyncio.wait(
                    [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if wait_deliver in done:
                    if not await self._handle_message_delivery(
                        client_session, handler, wait_deliver
                    ):
                        break
                    wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
                if subscribe_waiter in done:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    subscribe_waiter = asyncio.ensure_future(
                        handler.get_next_pending_subscription()
                    )
                if unsubscribe_waiter in done:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    unsubscribe_waiter = asyncio.ensure_future(
                        handler.get_next_pending_unsubscription()
                    )
                if disconnect_waiter in done:
                    wait_deliver = await self._deliver_received(
                        client_session, handler, wait_deliver
                    )
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    connected = False
            except asyncio.CancelledError:
                log.debug("client loop cancelled")
                break
        waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    async def _deliver_received(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[Any],
    ) -> asyncio.Future[Any]:
        """Handle every message received (and acknowledged) before the disconnect.

        The pending "next message" waiter is stopped first: once it runs it takes a message
        off the queue, and cancelling it afterwards would drop that message."""
        loop = asyncio.get_running_loop()
        if not wait_deliver.done():
            wait_deliver.cancel()
            await asyncio.gather(wait_deliver, return_exceptions=True)
        if (
            not wait_deliver.cancelled()
            and wait_deliver.exception() is None
            and wait_deliver.result() is not None
        ):
            await self._handle_message_delivery(client_session, handler, wait_deliver)
        queue = client_session.delivered_message_queue
        while not queue.empty():
            message = loop.create_future()
            message.set_result(queue.get_nowait())
            await self._handle_message_delivery(client_session, handler, message)
        return wait_deliver


class AbortableWriter(BatchedWriter):
    """amqtt's writer adapter (packets of one loop pass sent together) that can also drop
    its connection at once (no flush)."""

    def abort(self) -> None:
        self.is_closed = True
        self._transport.abort()


def _code(exc: ConnectRefused) -> str:
    text = str(exc)
    if text.startswith("no CONNECT within"):
        return "connect_timeout"
    if exc.reply:
        return "protocol_version"
    if "exceeds MQTT_MAX_PACKET_SIZE" in text:
        return "packet_too_large"
    return "malformed"
