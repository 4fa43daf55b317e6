"""Our own bound on received-and-not-taken messages (backend/mqtt/receive_bound.py,
RELIABILITY F10), against a real Mosquitto: a client set up as the backend's (MQTT 5,
persistent session, manual acks, Receive Maximum, buffered reads) stops reading while
aiomqtt's incoming queue is full, reads on once it is taken down, and loses nothing."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from aiomqtt import ProtocolVersion

from backend.mqtt import buffered_reads
from backend.mqtt.acks import RECEIVE_MAXIMUM
from backend.mqtt.connection import connect_properties
from backend.mqtt.receive_bound import ReceiveBound
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import until

pytestmark = pytest.mark.mosquitto

MESSAGES = 8_000
HIGH, LOW = 300, 150
BATCH = 500
TOPIC = "locker/bank-0001/state"
PAYLOAD_BYTES = 100
# A PUBLISH as the broker sends it: fixed header (1 + 2 length bytes), topic (2 + name),
# packet id (2), empty properties (1), payload. One socket read is CHUNK bytes at most.
PACKET_BYTES = 3 + 2 + len(TOPIC) + 2 + 1 + PAYLOAD_BYTES
ONE_READ = buffered_reads.CHUNK // PACKET_BYTES + 1


def backend_like_client(port: int) -> aiomqtt.Client:
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bound-test",
        protocol=ProtocolVersion.V5,
        clean_start=False,
        properties=connect_properties(persistent=True),
    )
    buffered_reads.attach(client._client)
    client._client.manual_ack_set(True)
    return client


async def publish_all(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bound-publisher") as publisher:
        for index in range(MESSAGES):
            body = index.to_bytes(4, "big") + b"x" * (PAYLOAD_BYTES - 4)
            await publisher.publish(TOPIC, body, qos=1)


async def test_the_bound_needs_low_below_high() -> None:
    with pytest.raises(ValueError, match="low < high"):
        ReceiveBound(aiomqtt.Client("127.0.0.1", 1), high=10, low=10)


async def test_reading_stops_at_the_bound_and_goes_on_without_losing_a_message(
    mosquitto: MosquittoBroker,
) -> None:
    client = backend_like_client(mosquitto.port)
    bound = ReceiveBound(client, high=HIGH, low=LOW)
    seen: list[int] = []
    most_waiting = 0
    async with client:
        await client.subscribe("locker/+/state/#", qos=1)
        bound.arm()  # the receive loop starts
        publishing = asyncio.create_task(publish_all(mosquitto.port))
        # Nothing taken yet: the broker may send a whole window (2,000), we read ~HIGH.
        await until(lambda: bound.paused, what="reading paused", timeout=30)
        assert bound.waiting < RECEIVE_MAXIMUM
        batch: list[aiomqtt.Message] = []
        async for message in client.messages:
            bound.taken()
            most_waiting = max(most_waiting, bound.waiting)
            assert isinstance(message.payload, bytes)
            seen.append(int.from_bytes(message.payload[:4], "big"))
            batch.append(message)
            if len(batch) == BATCH or len(seen) == MESSAGES:
                for done in batch:  # PUBACKs flow in batches, as the writer commits
                    client._client.ack(done.mid, done.qos)
                batch.clear()
            if len(seen) == MESSAGES:
                break
        await publishing
    assert seen == list(range(MESSAGES))  # every message, once, in order
    assert most_waiting <= HIGH + ONE_READ
    assert bound.pauses >= 1 and not bound.paused  # it paused, and read on


async def test_a_stalled_receive_side_goes_on_reading_now_and_then_and_keeps_its_connection(
    mosquitto: MosquittoBroker,
) -> None:
    """Nothing taken for a while (a locked database): each `max_pause` reading goes on for
    a read (a PINGRESP must get through), and pauses again while the queue stays full."""
    client = backend_like_client(mosquitto.port)
    bound = ReceiveBound(client, high=HIGH, low=LOW, max_pause=0.2)
    async with client:
        await client.subscribe("locker/+/state/#", qos=1)
        bound.arm()  # the receive loop starts
        publishing = asyncio.create_task(publish_all(mosquitto.port))
        # paused, woken, paused again on the rest of the window, woken: reading
        await until(lambda: bound.pauses >= 2 and not bound.paused, what="woken", timeout=30)
        assert HIGH <= bound.waiting <= RECEIVE_MAXIMUM  # nothing acknowledged: one window
        assert client._client.is_connected()
        taken = 0
        async for message in client.messages:  # the database is back
            bound.taken()
            client._client.ack(message.mid, message.qos)
            taken += 1
            if taken == MESSAGES:
                break
        await publishing
    assert taken == MESSAGES


async def test_a_resumed_backlog_does_not_stop_the_setup_before_the_bound_is_armed(
    mosquitto: MosquittoBroker,
) -> None:
    """A persistent session resumed with more waiting than the bound: the setup's SUBACK
    and PUBACK come after the backlog on the socket. Unarmed, the bound reads on (with
    `max_pause` an hour, a pause here would hang the setup); armed, it holds at once."""
    backlog = 4 * HIGH
    async with backend_like_client(mosquitto.port) as first:  # the session and its filter
        await first.subscribe("locker/+/state/#", qos=1)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="bound-pub") as pub:
        for index in range(backlog):
            await pub.publish(TOPIC, index.to_bytes(4, "big"), qos=1)
    client = backend_like_client(mosquitto.port)
    bound = ReceiveBound(client, high=HIGH, low=LOW, max_pause=3600)
    async with client:
        async with asyncio.timeout(30):
            await client.subscribe("locker/+/state/#", qos=1)  # as the backend's setup
            await client.publish("server/status/bound-test", b"online", qos=1)
            await until(lambda: bound.waiting >= HIGH, what="the backlog read", timeout=30)
        assert not bound.paused and bound.pauses == 0
        bound.arm()
        assert bound.paused  # the setup left the queue full: held at once
        seen: list[int] = []
        async for message in client.messages:
            bound.taken()
            assert isinstance(message.payload, bytes)
            seen.append(int.from_bytes(message.payload[:4], "big"))
            client._client.ack(message.mid, message.qos)
            if len(seen) == backlog:
                break
    assert seen == list(range(backlog)) and not bound.paused
