"""The embedded broker with real parts: amqtt in-process, the real auth hook over HTTP, aiomqtt.

No sleeps: every wait is on a condition (a received message, a broker state change) with
a timeout. "Nothing arrived" is proven by a marker sent afterwards on the client's own
topic: messages from one broker connection arrive in order, so anything that was going to
arrive arrives before the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest
from amqtt.broker import Broker

from backend.broker import BrokerStartError, EmbeddedBroker
from backend.broker.config import build_broker_config
from backend.broker.monitor import ClientMonitorPlugin
from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    DEVICE_B,
    DEVICE_PASSWORDS,
    SECRET,
    TIMEOUT,
    Address,
    Endpoint,
    HookFixture,
    Inbox,
    client,
    connect_packet,
    embedded_broker,
    raw_connection,
    running_hook,
)
from tests.support.mosquitto import free_port

A_STATE = f"locker/{DEVICE_A}/state"
A_EVENT = f"locker/{DEVICE_A}/event"
A_COMMAND = f"locker/{DEVICE_A}/command"
B_STATE = f"locker/{DEVICE_B}/state"
B_EVENT = f"locker/{DEVICE_B}/event"
B_COMMAND = f"locker/{DEVICE_B}/command"
A_PERSISTENT_ID = "device-a-persistent"
NOT_AUTHORIZED = 5  # CONNACK return code, MQTT 3.1.1 (raw connections)
SUBACK_FAILURE = 128


@pytest.fixture
async def hook() -> AsyncIterator[HookFixture]:
    async with running_hook() as running:
        yield running


@pytest.fixture
async def broker(hook: HookFixture, tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    async with embedded_broker(hook, tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def listening(mqtt: aiomqtt.Client) -> AsyncIterator[Inbox]:
    inbox = Inbox(mqtt)
    try:
        yield inbox
    finally:
        await inbox.close()


async def publish_and_settle(
    publisher: aiomqtt.Client, observer: Inbox, topic: str, payload: bytes, *, retain: bool
) -> None:
    """Publish, then a marker on the publisher's event topic, and wait until `observer`
    saw the marker: the broker has then fully handled the first message (retained it, too)."""
    await publisher.publish(topic, payload, qos=1, retain=retain)
    marker_topic = topic.rsplit("/", 1)[0] + "/event"
    marker = b"settled:" + payload
    await publisher.publish(marker_topic, marker, qos=1)
    await observer.wait_for(marker_topic, marker)


def refused_not_authorized(error: aiomqtt.MqttCodeError) -> bool:
    """paho maps the 3.1.1 CONNACK code 5 to the MQTT 5 reason "Not authorized" (135)."""
    return str(error.rc) == "Not authorized"


async def assert_only_own_until_marker(
    inbox: Inbox, backend: aiomqtt.Client, marker: bytes
) -> None:
    """Backend sends `marker` on A's command topic; A got nothing but its own topics first."""
    await backend.publish(A_COMMAND, marker, qos=1)
    received = await inbox.wait_for(A_COMMAND, marker)
    foreign = [m for m in inbox.before(received) if DEVICE_B in m.topic]
    assert foreign == [], f"device A received bank B's messages: {foreign}"


# -- 1. authentication ----------------------------------------------------------------


async def test_wrong_password_is_not_authorized(broker: EmbeddedBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with client(broker, DEVICE_A, "not-the-password"):
            pass
    assert refused_not_authorized(refused.value)


async def test_unknown_user_and_anonymous_are_not_authorized(broker: EmbeddedBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError) as unknown:
        async with client(broker, "nobody", "whatever"):
            pass
    assert refused_not_authorized(unknown.value)
    anonymous = aiomqtt.Client(broker.host, broker.port, identifier="anon", timeout=TIMEOUT)
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with anonymous:
            pass
    assert refused_not_authorized(refused.value)


async def test_correct_credentials_connect_and_the_hook_is_asked(
    broker: EmbeddedBroker, hook: HookFixture
) -> None:
    async with client(broker, DEVICE_A):
        assert broker.is_connected(DEVICE_A)
    auth = [c for c in hook.calls if c.path == "/api/mosq/auth"]
    assert auth[-1].body == {
        "username": DEVICE_A,
        "password": DEVICE_PASSWORDS[DEVICE_A],
        "client_id": DEVICE_A,
    }


async def _refused(broker: EmbeddedBroker, client_id: str, *, clean_session: bool) -> None:
    impostor = client(
        broker, DEVICE_A, "guessed", identifier=client_id, clean_session=clean_session
    )
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with impostor:
            pass
    assert refused_not_authorized(refused.value)


async def test_failed_login_with_a_devices_client_id_changes_nothing(
    broker: EmbeddedBroker,
) -> None:
    """amqtt 0.12.1 applies a CONNECT to the session table before authenticating it: a
    wrong password used to kick the connected device, or wipe its offline queue."""
    async with client(broker, BACKEND_USER) as backend:
        persistent = client(broker, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False)
        async with persistent as device_a, listening(device_a) as inbox:
            await device_a.subscribe(A_COMMAND, qos=1)
            await _refused(broker, A_PERSISTENT_ID, clean_session=False)
            await _refused(broker, A_PERSISTENT_ID, clean_session=True)
            assert broker.is_connected(A_PERSISTENT_ID)
            await backend.publish(A_COMMAND, b"still-here", qos=1)
            await inbox.wait_for(A_COMMAND, b"still-here")
        await broker.wait_until(lambda: not broker.is_connected(A_PERSISTENT_ID))

        await backend.publish(A_COMMAND, b"queued", qos=1)
        await broker.wait_until(lambda: broker.queued_count(A_PERSISTENT_ID) == 1)
        await _refused(broker, A_PERSISTENT_ID, clean_session=True)
        await _refused(broker, A_PERSISTENT_ID, clean_session=False)
        assert broker.queued_count(A_PERSISTENT_ID) == 1

    again = client(broker, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False)
    async with again as device_a, listening(device_a) as inbox:
        await inbox.wait_for(A_COMMAND, b"queued")


# -- 2. one bank never sees another ----------------------------------------------------


async def test_device_cannot_subscribe_to_or_receive_another_bank(
    broker: EmbeddedBroker, hook: HookFixture
) -> None:
    async with (
        client(broker, BACKEND_USER) as backend,
        listening(backend) as backend_inbox,
        client(broker, DEVICE_B) as device_b,
        client(broker, DEVICE_A) as device_a,
        listening(device_a) as inbox,
    ):
        await backend.subscribe("locker/#", qos=1)
        refused = await device_a.subscribe([(B_STATE, 1), (B_COMMAND, 1), ("locker/#", 1)])
        assert [code.value for code in refused] == [SUBACK_FAILURE] * 3
        granted = await device_a.subscribe(A_COMMAND, qos=1)
        assert [code.value for code in granted] == [1]

        await device_b.publish(B_STATE, b"b-heartbeat", qos=1, retain=True)
        await device_b.publish(B_EVENT, b"b-event", qos=1)
        await backend.publish(B_COMMAND, b"command-for-b", qos=1)
        # once the backend has B's traffic, the broker has dealt it to every subscriber
        await backend_inbox.wait_for(B_EVENT, b"b-event")
        await backend_inbox.wait_for(B_COMMAND, b"command-for-b")

        await assert_only_own_until_marker(inbox, backend, b"marker-2")
        assert all(m.topic == A_COMMAND for m in inbox.messages)
    subscribe_checks = hook.acl_calls(acc=4, client_id=DEVICE_A)
    assert {c.topic for c in subscribe_checks} >= {B_STATE, B_COMMAND, "locker/#"}


async def test_device_cannot_publish_as_another_bank(broker: EmbeddedBroker) -> None:
    async with (
        client(broker, BACKEND_USER) as backend,
        listening(backend) as inbox,
        client(broker, DEVICE_A) as device_a,
    ):
        await backend.subscribe("locker/#", qos=1)
        await device_a.publish(B_STATE, b"forged", qos=1)  # dropped silently (MQTT 3.1.1)
        await device_a.publish(B_COMMAND, b"forged", qos=1)
        await device_a.publish(A_EVENT, b"marker", qos=1)
        marker = await inbox.wait_for(A_EVENT, b"marker")
        assert inbox.before(marker) == []


async def test_each_delivery_asks_the_hook_for_receive(
    broker: EmbeddedBroker, hook: HookFixture
) -> None:
    """A live delivery, and a retained one on subscribe, both go through acc 1."""
    a_id = DEVICE_A
    hook.deny_receive.add((a_id, "server/status"))
    async with (
        client(broker, BACKEND_USER) as backend,
        listening(backend) as backend_inbox,
        client(broker, DEVICE_A) as device_a,
        listening(device_a) as inbox,
    ):
        await backend.subscribe("server/status", qos=1)
        await backend.publish("server/status", b'{"status":"online"}', qos=1, retain=True)
        await backend_inbox.wait_for("server/status")  # delivered, so retained by now
        await device_a.subscribe([("server/status", 1), (A_COMMAND, 1)])  # retained: checked
        await backend.publish("server/status", b'{"status":"live"}', qos=1)  # live: checked
        await backend.publish(A_COMMAND, b"marker", qos=1)
        marker = await inbox.wait_for(A_COMMAND, b"marker")
        assert inbox.before(marker) == []
    receive_checks = hook.acl_calls(acc=1, client_id=a_id)
    assert [c.topic for c in receive_checks].count("server/status") == 2

    # Control: B, not denied, gets the retained message on subscribe, RETAIN set.
    async with client(broker, DEVICE_B) as device_b, listening(device_b) as inbox_b:
        await device_b.subscribe("server/status", qos=1)
        retained = await inbox_b.wait_for("server/status")
        assert (retained.payload, retained.retain) == (b'{"status":"online"}', True)


# -- 3. THE REGRESSION: retained replay on session resume -------------------------------


WaitFn = Callable[[str], Awaitable[None]]


async def _resume_scenario(fake: Endpoint, wait_disconnected: WaitFn) -> Inbox:
    """B's retained state exists; persistent A resumes. Returns A's inbox up to the marker."""
    async with (
        client(fake, BACKEND_USER) as backend,
        listening(backend) as backend_inbox,
        client(fake, DEVICE_B) as device_b,
    ):
        await backend.subscribe("locker/#", qos=1)  # a filter in the broker matching B
        await publish_and_settle(device_b, backend_inbox, B_STATE, b"b-state", retain=True)

        first = client(fake, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False)
        async with first as device_a:
            await device_a.subscribe(A_COMMAND, qos=1)
        await wait_disconnected(A_PERSISTENT_ID)

        again = client(fake, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False)
        async with again as device_a, listening(device_a) as inbox:
            # A real device subscribes again on every connect; the SUBACK also proves the
            # broker finished its resume work (it runs before the client's message loop).
            await device_a.subscribe(A_COMMAND, qos=1)
            await backend.publish(A_COMMAND, b"marker-3", qos=1)
            await inbox.wait_for(A_COMMAND, b"marker-3")
            return inbox


async def test_resumed_session_never_receives_another_banks_retained_state(
    broker: EmbeddedBroker, hook: HookFixture
) -> None:
    async def wait_disconnected(client_id: str) -> None:
        await broker.wait_until(lambda: not broker.is_connected(client_id), TIMEOUT)

    inbox = await _resume_scenario(broker, wait_disconnected)
    foreign = [m for m in inbox.messages if DEVICE_B in m.topic]
    assert foreign == [], f"resumed device A received bank B's retained messages: {foreign}"
    asked = {c.topic for c in hook.acl_calls(acc=1, client_id=A_PERSISTENT_ID)}
    assert B_STATE not in asked  # not even considered: the backend's filter is not A's


async def test_canary_upstream_amqtt_still_leaks_on_resume(
    hook: HookFixture, tmp_path: Path
) -> None:
    """amqtt 0.12.1 itself leaks B's retained state to a resuming A (NOTES.md). If this
    fails after an amqtt upgrade, upstream fixed it: review SecureBroker's overrides."""
    port = free_port()
    config = build_broker_config(
        host="127.0.0.1", port=port, hook_url=hook.url, mosq_secret=SECRET, db_file=None
    )
    upstream = Broker(config)
    await upstream.start()
    try:
        monitor = upstream.plugins_manager.get_plugin(ClientMonitorPlugin.__name__)
        assert isinstance(monitor, ClientMonitorPlugin)

        def connected(client_id: str) -> bool:
            session = upstream.sessions.get(client_id, (None, None))[0]
            return session is not None and session.transitions.state == "connected"

        async def wait_disconnected(client_id: str) -> None:
            await monitor.wait_for(lambda: not connected(client_id), TIMEOUT)

        inbox = await _resume_scenario(Address("127.0.0.1", port), wait_disconnected)
    finally:
        await upstream.shutdown()
    assert any(m.topic == B_STATE for m in inbox.messages), "upstream no longer leaks"


# -- 4. last will, retained heartbeat, offline queue -------------------------------------


async def test_last_will_reaches_the_backend(broker: EmbeddedBroker) -> None:
    will = b'{"type":"state","state":"connection_lost","reason":"mqtt_last_will"}'
    async with client(broker, BACKEND_USER) as backend, listening(backend) as inbox:
        await backend.subscribe("locker/+/state", qos=1)
        packet = connect_packet(
            DEVICE_A, DEVICE_A, DEVICE_PASSWORDS[DEVICE_A], will_topic=A_STATE,
            will_payload=will,
        )  # fmt: skip
        async with raw_connection(broker, packet) as (code, _writer):
            assert code == 0
        # leaving the block aborts the TCP connection: no DISCONNECT, so the will fires
        received = await inbox.wait_for(A_STATE, will)
        assert received.qos == 1
        assert received.retain is False


async def test_will_on_a_topic_the_device_may_not_publish_is_refused(
    broker: EmbeddedBroker,
) -> None:
    packet = connect_packet(
        "device-a-evil", DEVICE_A, DEVICE_PASSWORDS[DEVICE_A], will_topic=B_COMMAND,
        will_payload=b'{"action":"open_compartment"}',
    )  # fmt: skip
    async with raw_connection(broker, packet) as (code, _writer):
        assert code == NOT_AUTHORIZED


async def test_retained_heartbeat_is_delivered_to_a_new_subscriber(
    broker: EmbeddedBroker,
) -> None:
    heartbeat = b'{"type":"state","state":"heartbeat"}'
    async with (
        client(broker, BACKEND_USER, identifier="backend-1") as backend,
        listening(backend) as inbox,
        client(broker, DEVICE_A) as device_a,
    ):
        await backend.subscribe(A_EVENT, qos=1)
        await publish_and_settle(device_a, inbox, A_STATE, heartbeat, retain=True)
    assert A_STATE in broker.retained_topics()
    async with (
        client(broker, BACKEND_USER, identifier="backend-2") as late,
        listening(late) as late_inbox,
    ):
        await late.subscribe("locker/+/state", qos=1)
        received = await late_inbox.wait_for(A_STATE)
        assert (received.payload, received.retain, received.qos) == (heartbeat, True, 1)


async def test_qos1_message_is_queued_for_an_offline_persistent_client(
    broker: EmbeddedBroker,
) -> None:
    async with client(broker, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False) as dev:
        await dev.subscribe(A_COMMAND, qos=1)
    await broker.wait_until(lambda: not broker.is_connected(A_PERSISTENT_ID))

    async with client(broker, BACKEND_USER) as backend:
        await backend.publish(A_COMMAND, b"queued-command", qos=1)
    await broker.wait_until(lambda: broker.queued_count(A_PERSISTENT_ID) == 1)

    again = client(broker, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False)
    async with again as dev, listening(dev) as inbox:
        received = await inbox.wait_for(A_COMMAND, b"queued-command")
        # an established subscription: RETAIN must be 0 [MQTT-3.3.1-9] (amqtt sends 1)
        assert (received.qos, received.retain) == (1, False)
    assert broker.queued_count(A_PERSISTENT_ID) == 0


# -- 5. the port -----------------------------------------------------------------------


async def test_port_in_use_gives_one_clear_error(
    broker: EmbeddedBroker, hook: HookFixture, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    second = embedded_broker(hook, tmp_path, port=broker.port)
    with pytest.raises(BrokerStartError) as error:
        await second.start()
    assert str(error.value) == (
        f"MQTT port {broker.port} on 127.0.0.1 is already in use; set MQTT_HOST to use an "
        "external broker or MQTT_PORT to pick another port"
    )
    assert error.value.__cause__ is None
    assert not second.running
    assert [r for r in caplog.records if r.exc_info] == []


async def test_port_taken_by_another_program(hook: HookFixture, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(BrokerStartError, match=rf"MQTT port {port} .*MQTT_HOST"):
            await embedded_broker(hook, tmp_path, port=port).start()


async def test_port_zero_reports_the_real_port(broker: EmbeddedBroker) -> None:
    assert broker.port > 0
    async with client(broker, DEVICE_A):
        pass


# -- robustness --------------------------------------------------------------------------


async def test_broadcast_survives_a_subscribe_during_the_receive_check(
    broker: EmbeddedBroker, hook: HookFixture
) -> None:
    """amqtt walks its subscription dict while awaiting the hook; a new filter added
    meanwhile used to abort the broadcast ("dictionary changed size during iteration")."""
    release = hook.hold("backend-first", A_STATE)
    async with (
        client(broker, BACKEND_USER, identifier="backend-first") as first,
        listening(first) as first_inbox,
        client(broker, BACKEND_USER, identifier="backend-second") as second,
        listening(second) as second_inbox,
        client(broker, BACKEND_USER, identifier="backend-third") as third,
        client(broker, DEVICE_A) as device_a,
    ):
        await first.subscribe("locker/+/state", qos=1)  # first filter in the table
        await second.subscribe("locker/#", qos=1)  # second filter
        await device_a.publish(A_STATE, b"hb", qos=1)
        async with asyncio.timeout(TIMEOUT):
            await hook.held[("backend-first", A_STATE)].wait()
        await third.subscribe("server/status", qos=1)  # a new key while the loop waits
        release.set()
        await first_inbox.wait_for(A_STATE, b"hb")
        await second_inbox.wait_for(A_STATE, b"hb")


async def test_unreachable_hook_refuses_logins(tmp_path: Path) -> None:
    dead = EmbeddedBroker(
        port=0,
        hook_url=f"http://127.0.0.1:{free_port()}",
        mosq_secret=SECRET,
        data_dir=tmp_path,
        persistence=False,
        hook_timeout=2.0,
    )
    async with dead:
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with client(dead, DEVICE_A):
                pass
        assert refused_not_authorized(refused.value)


async def test_secret_never_reaches_the_logs(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(broker, DEVICE_A, "wrong"):
            pass
    async with client(broker, BACKEND_USER) as backend, listening(backend) as inbox:
        await backend.subscribe("locker/#", qos=1)
        async with client(broker, DEVICE_A) as device_a:
            await device_a.subscribe(B_COMMAND, qos=1)
            await device_a.publish(A_STATE, b"x", qos=1, retain=True)
        await inbox.wait_for(A_STATE)
    await broker.stop()
    assert caplog.records, "expected amqtt to log at DEBUG"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert SECRET not in text, record.name


# -- persistence ---------------------------------------------------------------------------


async def test_retained_and_queued_messages_survive_a_restart_once(
    hook: HookFixture, tmp_path: Path
) -> None:
    pytest.importorskip("aiosqlite")
    pytest.importorskip("greenlet")
    first = embedded_broker(hook, tmp_path, persistence=True)
    async with first:
        async with client(first, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False) as dev:
            await dev.subscribe(A_COMMAND, qos=1)
        await first.wait_until(lambda: not first.is_connected(A_PERSISTENT_ID))
        async with client(first, BACKEND_USER) as backend:
            await backend.publish("server/status", b'{"status":"online"}', qos=1, retain=True)
            await backend.publish(A_COMMAND, b"queued-before-restart", qos=1)
        await first.wait_until(lambda: first.queued_count(A_PERSISTENT_ID) == 1)
    assert first.db_file is not None and first.db_file.parent == tmp_path / "broker"
    assert first.db_file.exists()

    async with embedded_broker(hook, tmp_path, persistence=True) as second:
        assert "server/status" in second.retained_topics()
        assert second.queued_count(A_PERSISTENT_ID) == 1
        again = client(second, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False)
        async with again as dev, listening(dev) as inbox:
            await inbox.wait_for(A_COMMAND, b"queued-before-restart")

    async with embedded_broker(hook, tmp_path, persistence=True) as third:
        assert third.queued_count(A_PERSISTENT_ID) == 0  # delivered once, not again
        async with (
            client(third, DEVICE_A, identifier=A_PERSISTENT_ID, clean_session=False) as dev,
            listening(dev) as inbox,
            client(third, BACKEND_USER) as backend,
        ):
            await dev.subscribe([(A_COMMAND, 1), ("server/status", 1)])
            status = await inbox.wait_for("server/status")
            assert status.retain
            await backend.publish(A_COMMAND, b"marker", qos=1)
            marker = await inbox.wait_for(A_COMMAND, b"marker")
            assert b"queued-before-restart" not in [m.payload for m in inbox.before(marker)]


async def test_persistence_without_its_packages_is_a_clear_error(
    hook: HookFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backend.broker.embedded as embedded

    monkeypatch.setattr(embedded, "PERSISTENCE_MODULES", ("no_such_module_for_test",))
    with pytest.raises(BrokerStartError, match="no_such_module_for_test"):
        await embedded_broker(hook, tmp_path, persistence=True).start()


async def test_unusable_state_file_is_a_clear_error(hook: HookFixture, tmp_path: Path) -> None:
    pytest.importorskip("aiosqlite")
    pytest.importorskip("greenlet")
    broker = embedded_broker(hook, tmp_path, persistence=True)
    assert broker.db_file is not None
    broker.db_file.parent.mkdir(parents=True)
    broker.db_file.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BrokerStartError, match="unusable"):
        await broker.start()


# -- 10. QoS 1: a late PUBACK never costs the message -----------------------------------

UPSTREAM_PUBACK_WAIT = 5.0  # amqtt 0.12.1 forgets a QoS 1 delivery not acknowledged by then


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, body)."""
    async with asyncio.timeout(TIMEOUT * 3):
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, await reader.readexactly(length)


async def _raw_persistent_device_a(
    broker: EmbeddedBroker,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """Device A's persistent session over a raw socket (it acknowledges nothing by itself);
    returns reader, writer and CONNACK's session-present flag."""
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    packet = connect_packet(
        A_PERSISTENT_ID, DEVICE_A, DEVICE_PASSWORDS[DEVICE_A], will_topic=A_STATE,
        will_payload=b"offline", clean_session=False,
    )  # fmt: skip
    writer.write(packet)
    first, body = await _read_packet(reader)
    assert (first, body[1]) == (0x20, 0), (first, body)
    return reader, writer, body[0]


def _publish_of(body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id, payload) of a QoS 1 PUBLISH body."""
    size = struct.unpack("!H", body[:2])[0]
    topic = body[2 : 2 + size].decode()
    (packet_id,) = struct.unpack("!H", body[2 + size : 4 + size])
    return topic, packet_id, body[4 + size :]


async def test_a_qos1_delivery_acknowledged_late_is_resent_after_a_reconnect(
    broker: EmbeddedBroker,
) -> None:
    """amqtt gives up on a QoS 1 delivery whose PUBACK is not in within 5 s and forgets it:
    a subscriber that was slow (a loaded machine) and then lost its connection never got
    it. Ours keeps it in flight and resends it (DUP) when the session resumes."""
    reader, writer, _ = await _raw_persistent_device_a(broker)
    try:
        topic = A_COMMAND.encode()
        sub = struct.pack("!H", 1) + struct.pack("!H", len(topic)) + topic + b"\x01"
        writer.write(b"\x82" + bytes([len(sub)]) + sub)
        await writer.drain()
        first, body = await _read_packet(reader)
        assert first == 0x90 and body[2] == 1, (first, body)  # SUBACK, QoS 1 granted
        async with client(broker, BACKEND_USER) as backend:
            await backend.publish(A_COMMAND, b"late-acked", qos=1)
        first, body = await _read_packet(reader)
        assert first & 0xF6 == 0x32, first  # PUBLISH, QoS 1
        _, packet_id, payload = _publish_of(body)
        assert payload == b"late-acked"
        # Hold the PUBACK past upstream's limit; nothing else comes on this connection.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(UPSTREAM_PUBACK_WAIT + 1):
                await reader.read(1)
    finally:
        writer.transport.abort()
    await broker.wait_until(lambda: not broker.is_connected(A_PERSISTENT_ID))

    reader, writer, present = await _raw_persistent_device_a(broker)
    try:
        assert present == 1  # the session resumed
        first, body = await _read_packet(reader)
        assert first & 0xFE == 0x3A, first  # PUBLISH again: DUP set, QoS 1
        assert _publish_of(body) == (A_COMMAND, packet_id, b"late-acked")
        writer.write(b"\x40\x02" + struct.pack("!H", packet_id))  # PUBACK
        await writer.drain()
    finally:
        writer.transport.abort()
