"""paho with a read buffer (backend/mqtt/buffered_reads.py): every packet a socket
wake-up brings is handled in one `loop_read`, none waits in the buffer for a wake-up that
will not come, and a packet cut across reads is put together."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTErrorCode, MQTTMessage

from backend.mqtt import buffered_reads


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 QoS 0 PUBLISH."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + payload
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x30]) + bytes(encoded) + body


@pytest.fixture
def wired() -> Iterator[tuple[Client, socket.socket, list[MQTTMessage]]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = Client(CallbackAPIVersion.VERSION2, client_id="buffered")
    received: list[MQTTMessage] = []
    client.on_message = lambda _c, _u, message: received.append(message)
    client._sock = ours  # as if connected: paho reads from this socket
    try:
        yield client, broker, received
    finally:
        ours.close()
        broker.close()


def test_one_loop_read_handles_every_packet_a_wake_up_brings(
    wired: tuple[Client, socket.socket, list[MQTTMessage]],
) -> None:
    client, broker, received = wired
    reads = buffered_reads.attach(client)
    packets = [publish_packet(f"locker/b{n}/state", b"x" * (n % 300)) for n in range(500)]
    broker.sendall(b"".join(packets))
    while len(received) < 500:  # the socket pair may hand over the bytes in chunks
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert reads.buffered == 0  # nothing left behind for a wake-up that will not come
    assert [m.topic for m in received] == [f"locker/b{n}/state" for n in range(500)]
    assert [len(m.payload) for m in received] == [n % 300 for n in range(500)]


def test_a_packet_cut_across_reads_is_put_together(
    wired: tuple[Client, socket.socket, list[MQTTMessage]],
) -> None:
    client, broker, received = wired
    reads = buffered_reads.attach(client)
    first, second = publish_packet("locker/a/state", b"one"), publish_packet("t/2", b"two" * 100)
    broker.sendall(first + second[:7])
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [m.payload for m in received] == [b"one"]
    assert reads.buffered == 0
    broker.sendall(second[7:])
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [m.payload for m in received] == [b"one", b"two" * 100]


def test_a_reconnect_starts_with_an_empty_buffer(
    wired: tuple[Client, socket.socket, list[MQTTMessage]],
) -> None:
    client, broker, received = wired
    reads = buffered_reads.attach(client)
    reserved = bytes([0x00, 0x00])  # command 0 is reserved: paho stops with a protocol error
    broker.sendall(publish_packet("t/1", b"a") + reserved + publish_packet("t/old", b"stale"))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert [m.payload for m in received] == [b"a"] and reads.buffered > 0
    fresh, peer = socket.socketpair()
    try:
        fresh.setblocking(False)
        client._sock = fresh  # a reconnect (paho starts a new packet, as reconnect() does)
        client._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        peer.sendall(publish_packet("t/new", b"fresh"))
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert [m.payload for m in received] == [b"a", b"fresh"]  # nothing of the old socket
        assert reads.buffered == 0
    finally:
        fresh.close()
        peer.close()
    broker.close()
    client._sock = None
