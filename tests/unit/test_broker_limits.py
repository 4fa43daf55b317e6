"""The embedded broker's limits as pure parts (issue 14, finding 4/5). The real-process
tests are in `tests/reliability/test_hardening.py`; what a loopback-only test machine
cannot show (a remote address over the per-address connection limit) is checked here."""

from __future__ import annotations

import asyncio

import pytest

from backend.broker.limits import (
    CONNACK_UNACCEPTABLE_PROTOCOL,
    AddressGate,
    ConnectRefused,
    LimitedReader,
    RegistrationGate,
)


def test_connections_per_address_loopback_never_limited() -> None:
    gate = AddressGate(limit=2)
    assert gate.enter("192.0.2.7") and gate.enter("192.0.2.7")
    assert not gate.enter("192.0.2.7")
    assert gate.enter("198.51.100.1")  # another address has its own count
    gate.leave("192.0.2.7")
    assert gate.enter("192.0.2.7")
    assert all(gate.enter("127.0.0.1") for _ in range(10))
    assert all(gate.enter("::1") for _ in range(10))
    assert gate.refused == 1
    assert all(AddressGate(limit=0).enter("192.0.2.7") for _ in range(10))


def test_registrations_per_address_and_minute() -> None:
    gate = RegistrationGate(limit=3, window=60.0)
    assert [gate.allow("192.0.2.7", t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert gate.allow("192.0.2.7", 61.0)  # the window moved on
    assert all(gate.allow("127.0.0.1", 5.0) for _ in range(10))  # the local simulators
    other = [gate.allow("127.0.0.2", 5.0) for _ in range(10)]  # other loopback: counted
    assert other == [True] * 3 + [False] * 7
    assert gate.dropped == 1 + 7


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def _connect(level: int) -> bytes:
    body = b"\x00\x04MQTT" + bytes((level, 0x02, 0x00, 0x3C)) + b"\x00\x01c"
    return bytes((0x10, len(body))) + body


async def test_only_an_mqtt_311_connect_is_read() -> None:
    ok = LimitedReader(_reader(_connect(4) + b"\xc0\x00"), max_packet_size=1024)
    await ok.read_connect(1.0)
    assert await ok.read(2) == _connect(4)[:2]
    with pytest.raises(ConnectRefused) as v5:
        await LimitedReader(_reader(_connect(5)), 1024).read_connect(1.0)
    assert v5.value.reply == CONNACK_UNACCEPTABLE_PROTOCOL
    with pytest.raises(ConnectRefused, match="not a CONNECT"):
        await LimitedReader(_reader(b"\xc0\x00"), 1024).read_connect(1.0)
    with pytest.raises(ConnectRefused, match="no CONNECT within"):
        await LimitedReader(asyncio.StreamReader(), 1024).read_connect(0.05)


async def test_a_packet_over_the_limit_is_never_read() -> None:
    refused: list[ConnectRefused] = []
    big = bytes((0x30, 0xFF, 0xFF, 0x03))  # PUBLISH announcing 65,535 bytes
    reader = LimitedReader(_reader(_connect(4) + big), 1024, refused.append)
    await reader.read_connect(1.0)
    await reader.read(len(_connect(4)))
    with pytest.raises(asyncio.IncompleteReadError):
        await reader.read(1)
    assert len(refused) == 1 and "exceeds MQTT_MAX_PACKET_SIZE" in str(refused[0])
