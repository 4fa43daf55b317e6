"""amqtt 0.12.1's Broker with its authorization holes closed.

Everything here overrides a private `amqtt.broker.Broker` method, each the smallest seam
found in the 0.12.1 source (one is re-implemented whole, see item 7 below); amqtt is pinned
to 0.12.1 (pyproject) because these names are not public API. Each override says what
upstream does and why that is not acceptable for a fleet of lockers (DESIGN section 4).
`tests/integration/test_embedded_broker.py` holds a regression test for every item and a
canary that fails once upstream stops leaking retained messages on resume.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import websockets.asyncio.server
from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from backend.broker.command_expiry import drop_expired_inflight, is_expired_command
from backend.broker.in_process_auth import Decisions, acl_of, login_of
from backend.broker.patient_handler import PatientBrokerProtocolHandler
from backend.broker.session_fields import copy_connect_fields

log = logging.getLogger(__name__)

_Subscribers = list[tuple[Session, int]]
# Set on a Session (amqtt's Session is unhashable, so no set of them) whose CONNECT passed.
_PREAUTHENTICATED = "_locker_console_preauthenticated"
# Queued messages whose RECEIVE checks are asked together (see `_run_broadcast`).
BROADCAST_BATCH = 32


class SnapshotSubscriptions(dict[str, _Subscribers]):
    """The broker's `filter -> [(session, qos)]` table, iterated over a snapshot, and indexed
    for a broadcast's look-up.

    amqtt 0.12.1 walks this dict with `for ... in self._subscriptions` / `.items()` and
    awaits inside the loop (the HTTP topic check for every delivery in `_run_broadcast`;
    retained replay in `_handle_client_session`). A SUBSCRIBE or a session clean-up by another
    client during that await adds or deletes a key, and the loop dies with "dictionary changed
    size during iteration": the rest of that broadcast is lost, or a reconnecting client is
    left connected but never served. Iterating a copy (subscriber lists copied too, since an
    unsubscribe pops from them) makes those loops safe without copying amqtt's methods.
    Lookups, `in`, `len` and mutation are the plain dict's.

    `matching(topic)` is what a broadcast needs (item 12 of `SecureBroker`): upstream tests
    every filter of every client against each message, so with one command filter per bank
    a heartbeat cost a pass (and a copy) over N filters, N heartbeats per interval: O(N^2)
    per interval. A filter without wildcards matches only the topic equal to it, so it is
    found by a dict look-up; only the wildcard filters (the backend's few) are tested.
    """

    def __init__(self) -> None:
        super().__init__()
        self._wildcards: dict[str, None] = {}  # the filters holding `+` or `#`, in order

    def __setitem__(self, key: str, value: _Subscribers) -> None:
        super().__setitem__(key, value)
        if "+" in key or "#" in key:
            self._wildcards[key] = None

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._wildcards.pop(key, None)

    def pop(self, key: str, *default: Any) -> Any:
        self._wildcards.pop(key, None)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._wildcards.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[str, _Subscribers]:
        key, value = super().popitem()
        self._wildcards.pop(key, None)
        return key, value

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, _Subscribers]]:  # type: ignore[override]  # a list copy, not a view
        return [(key, list(subs)) for key, subs in super().items()]

    def matching(
        self, topic: str, matches: Callable[[str, str], bool]
    ) -> list[tuple[Session, int]]:
        """Every `(session, qos)` whose filter matches `topic` (a new list): the subscribers
        of the filter equal to `topic`, then those of each wildcard filter `matches` accepts
        (the broker's `_matches`, with its `$` rule), as upstream's full scan finds them."""
        found: list[tuple[Session, int]] = []
        get = super().get
        if topic not in self._wildcards:
            found.extend(get(topic, ()))
        for a_filter in list(self._wildcards):
            subscribers = get(a_filter)
            if subscribers and matches(topic, a_filter):
                found.extend(subscribers)
        return found


class SecureBroker(Broker):
    """amqtt's Broker, authorizing every delivery through the topic plugins.

    Changes from amqtt 0.12.1, all needed so that one locker can never see another's traffic:

    1. **Retained replay on session resume** (`_publish_retained_messages_for_subscription`).
       When a `clean_session=False` client reconnects, upstream `_handle_client_session`
       calls this method for *every* filter in the broker (`self._subscriptions`, all clients'
       filters, e.g. the backend's `locker/#`) and the method publishes every matching
       retained message with no topic check. A locker reconnecting thus received other
       banks' retained `locker/{other}/state`; the hook was never asked. Here the method
       serves only filters the session itself holds (on the SUBSCRIBE path that is always
       true, the filter has just been added) and asks the topic plugins (acc 1, receive) for
       each retained message before sending it. Overriding this one method fixes both the
       resume path and the normal retained-on-subscribe path, which upstream also did not
       check with acc 1.
    2. **Queued messages on resume** (`_publish_session_retained_messages`): messages queued
       for an offline persistent session (checked with acc 1 when queued) are checked again
       at delivery, so a revocation in between takes effect, and are sent with RETAIN=0, as
       MQTT 3.1.1 [MQTT-3.3.1-9] requires for an established subscription (upstream sets 1,
       which makes a queued command look like a stale retained one).
    3. **Last will** (`_check_connect`): upstream never checks the will topic, so a device
       could set a will on `locker/{other}/command` and inject a command by dropping its
       connection. As Mosquitto does, a CONNECT whose will topic the client may not publish
       to (acc 2) is refused "not authorized".
    4. **Hook failures** (`_check_connect`, `_topic_filtering`): an unreachable or hung hook
       raised out of amqtt's handlers (a broadcast lost, a client left half-connected) and the
       plugins' HTTP session has no timeout. Here any failure or timeout is a denial, logged
       without the URL.
    5. **Iteration safety**: `_subscriptions` is a `SnapshotSubscriptions`.
    6. **Pre-bound listener** (`_create_server_instance`): the owner binds the TCP socket
       itself (clear "port in use" error, port 0), and the broker serves on that socket.
    7. **Authenticate before touching sessions** (`_initialize_client_session`). Upstream
       first applies a CONNECT to the broker's session table and only then authenticates:
       with `clean_session=1` it deletes the existing session of that client id (queued
       messages included), on resume it overwrites that session's username and will, and
       `_handle_client_session` even takes over (disconnects) a connected client of that
       id and installs its own handler before sending the refusing CONNACK. So anyone who
       knew a device's client id could, without a password, knock it offline, wipe its
       queue and leave its session pointing at a dead connection. The CONNECT is now
       checked right after it is read; a refused one never reaches the session table.
       Upstream has no smaller seam (the checks are inline in this method), so the method
       is re-implemented here, line for line except for that check (and the will's retain
       flag, which upstream forgot to carry over on resume).

    8. **Expired commands** (`backend/broker/command_expiry.py`): amqtt has no message
       expiry; a command queued for an offline device or retransmitted on resume is dropped
       once the `expires_at` of its payload has passed.

    9. **Deliveries in series** (`_run_broadcast`): upstream asks the hook's RECEIVE check
       (acc 1, every subscriber, online or queued) one delivery at a time, so a loaded
       machine's queue grows without bound; the checks of the queued messages are asked
       together, the deliveries still made in queue order.

    10. **QoS 1 deliveries dropped after 5 s** (`backend/broker/patient_handler.py`): a
        subscriber's late PUBACK no longer costs the message; it stays in flight until
        acknowledged and is resent when the session resumes.

    11. **Decisions in process** (`backend/broker/in_process_auth.py`): given `decisions`
        (the hook's `HookDecisions`, when the backend runs the broker in its own process),
        logins and topic checks await them directly instead of asking amqtt's HTTP plugins
        (which then are not configured); failures and timeouts still deny (4.).
    12. **Subscribers found by look-up** (`SnapshotSubscriptions.matching`): a broadcast
        looks up the filter equal to its topic and tests only the wildcard filters, instead
        of testing (and copying) every client's filters for every message.
    """

    def __init__(
        self,
        config: BrokerConfig | dict[str, Any],
        *,
        listen_socket: socket.socket | None = None,
        hook_timeout: float = 5.0,
        decisions: Decisions | None = None,
    ) -> None:
        super().__init__(config)
        self._subscriptions = SnapshotSubscriptions()
        self._listen_socket = listen_socket
        self._hook_timeout = hook_timeout
        self._decisions = decisions

    # -- 6. listener on a socket bound by the owner -------------------------------------

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: Any,
    ) -> asyncio.Server | websockets.asyncio.server.Server:
        if self._listen_socket is None or listener_type != ListenerType.TCP:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        sock, self._listen_socket = self._listen_socket, None
        return await asyncio.start_server(
            partial(self.stream_connected, listener_name=listener_name),
            sock=sock,
            ssl=ssl_context,
        )

    # -- 7. authenticate a CONNECT before it can touch the session table --------------------

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        peer = f"{remote_address}:{remote_port}"
        try:
            handler, client_session = await PatientBrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except AMQTTError as exc:
            log.warning("%s: can't read first packet as CONNECT: %s", peer, exc)
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            log.warning("invalid connection from %s", peer)
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            log.warning("no data from %s: %s", peer, exc)
            raise AMQTTError(exc) from exc

        if not await self._check_connect(client_session):
            connack = ConnackPacket.build(0, NOT_AUTHORIZED)
            await connack.to_stream(writer)
            await writer.close()
            raise MQTTError(f"CONNECT of client id {client_session.client_id!r} not authorized")

        await self._before_session_change(client_session)
        if client_session.clean_session:
            if client_session.client_id:
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing, _ = self._sessions[client_session.client_id]
            copy_connect_fields(client_session, existing)
            existing.username = client_session.username
            existing.password = client_session.password
            client_session = existing
            client_session.parent = 1
            drop_expired_inflight(client_session)  # 8. never retransmit an expired command
        else:
            client_session.parent = 0

        delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(delay, int):
            client_session.keep_alive += delay
        setattr(client_session, _PREAUTHENTICATED, True)  # consumed by `_authenticate`
        self._session_ready(client_session)
        return handler, client_session

    async def _before_session_change(self, incoming: Session) -> None:
        """Called for an authorized CONNECT before it touches the session table (a seam for
        `backend.broker.hardened`: take-over and identity changes)."""

    def _session_ready(self, session: Session) -> None:
        """Called with the session an authorized CONNECT will use, before its CONNACK (a seam
        for `backend.broker.resumed_session`: what "session present" says)."""

    async def _check_connect(self, session: Session) -> bool:
        """The hook's login check, then (3.) the will topic against the publish ACL."""
        try:
            async with asyncio.timeout(self._hook_timeout):
                if self._decisions is not None:
                    allowed = await login_of(self._decisions, session)
                else:
                    allowed = await super()._authenticate(session, self.listeners_config["default"])
        except Exception as exc:
            log.warning("auth hook failed for a CONNECT, refusing it: %s", type(exc).__name__)
            return False
        if not allowed or not session.will_flag:
            return allowed
        if not await self._topic_filtering(session, session.will_topic or "", Action.PUBLISH):
            log.info("refusing CONNECT of %s: will topic not allowed", session.client_id)
            return False
        return True

    async def _authenticate(self, session: Session, listener: ListenerConfig) -> bool:
        """Already decided in `_initialize_client_session`; checks again for any other caller."""
        if getattr(session, _PREAUTHENTICATED, False):
            setattr(session, _PREAUTHENTICATED, False)
            return True
        return await self._check_connect(session)

    # -- 4. topic checks fail closed --------------------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        try:
            async with asyncio.timeout(self._hook_timeout):
                if self._decisions is not None:
                    return await acl_of(self._decisions, session, topic, action)
                return await super()._topic_filtering(session, topic, action)
        except Exception as exc:
            log.warning("topic check failed, denying %s: %s", action.value, type(exc).__name__)
            return False

    # -- 9. deliveries: the RECEIVE checks of queued messages overlap ------------------------

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        """Upstream takes one message off the broadcast queue at a time and awaits the hook's
        RECEIVE check for each subscriber in turn: one HTTP round trip per delivery, in
        series. On a loaded machine a hundred heartbeating banks outrun that, the queue grows
        without bound (thousands of messages) and a command waits behind it past its expiry.

        Here the messages already queued (up to `BROADCAST_BATCH`) are taken together, every
        check of the batch is asked at once (the checks are independent decisions), and then
        the deliveries are made exactly as upstream makes them, in queue order: per
        subscriber the order of messages is unchanged, each delivery still needs its own
        allowed check, and a failed check still denies (fail closed)."""
        batch = [await self._broadcast_queue.get()]
        while len(batch) < BROADCAST_BATCH and not self._broadcast_queue.empty():
            batch.append(self._broadcast_queue.get_nowait())
        targets: list[list[tuple[Session, int]]] = []
        checks: list[Awaitable[bool]] = []
        for broadcast in batch:
            matched = self._subscriptions.matching(broadcast["topic"], self._matches)
            targets.append(matched)
            checks.extend(
                self._topic_filtering(session, broadcast["topic"], Action.RECEIVE)
                for session, _ in matched
            )
        if self._decisions is None:
            allowed = iter(await asyncio.gather(*checks))
        else:  # 11. decided in process: no round trip to overlap, so no task per check
            allowed = iter([await check for check in checks])
        for broadcast, matched in zip(batch, targets, strict=True):
            for target_session, sub_qos in matched:
                if not next(allowed):
                    log.info(
                        "%s not allowed to receive messages from TOPIC %s",
                        target_session.client_id,
                        broadcast["topic"],
                    )
                    continue
                await self._deliver_broadcast(broadcast, target_session, sub_qos, running_tasks)

    async def _deliver_broadcast(
        self,
        broadcast: dict[str, Any],
        target_session: Session,
        sub_qos: int,
        running_tasks: deque[asyncio.Task[Any]],
    ) -> None:
        """Upstream's `_run_broadcast` after an allowed check, unchanged: queue for an offline
        persistent session (QoS 1/2, not anonymous), publish to a connected one."""
        qos = broadcast.get("qos", sub_qos)
        connected = target_session.transitions.state == "connected"
        if (
            not connected
            and not target_session.clean_session
            and qos in (QOS_1, QOS_2)
            and not target_session.is_anonymous
        ):
            await self._retain_broadcast_message(broadcast, qos, target_session)
            return
        if not connected:
            return
        handler = self._get_handler(target_session)
        if handler:
            running_tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(broadcast["topic"], broadcast["data"], qos, retain=False)
                )
            )

    # -- 1. retained messages: own subscriptions only, each through the ACL -----------------

    def _granted_qos(self, topic_filter: str, session: Session) -> int | None:
        """The QoS this session holds on `topic_filter`, None when it does not subscribe it."""
        for subscriber, qos in self._subscriptions.get(topic_filter, ()):
            if subscriber.client_id == session.client_id:
                return qos
        return None

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter = subscription[0]
        granted = self._granted_qos(topic_filter, session)
        if granted is None:
            return  # another client's filter: upstream's resume replay walks all of them
        handler = self._get_handler(session)
        if handler is None:
            return
        sends: list[asyncio.Task[Any]] = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic, Action.RECEIVE):
                log.debug("retained message withheld from %s", session.client_id)
                continue
            qos = min(granted, retained.qos if retained.qos is not None else granted)
            sends.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(retained.topic, retained.data, qos, retain=True)
                )
            )
        await _settle(sends)

    # -- 2. queued messages: re-checked, RETAIN=0 -------------------------------------------

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._get_handler(session)
        if handler is None:
            return
        sends: list[asyncio.Task[Any]] = []
        while not session.retained_messages.empty():
            queued: ApplicationMessage = session.retained_messages.get_nowait()
            if not await self._topic_filtering(session, queued.topic, Action.RECEIVE):
                log.debug("queued message withheld from %s", session.client_id)
                continue
            if is_expired_command(queued.topic, queued.data):  # 8. expired while queued
                continue
            sends.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)
                )
            )
        await _settle(sends)


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for the sends and consume their errors (a PUBACK timeout is not the broker's fault)."""
    if not tasks:
        return
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException):
            log.debug("delivery to a client failed: %s", type(result).__name__)
