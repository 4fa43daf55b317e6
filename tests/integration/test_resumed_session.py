"""A device that stays up across an embedded-broker restart keeps receiving commands.

Subscriptions are not persisted, so after a restart a resumed session has none: the broker
must then say "no session" in its CONNACK (session-present 0), which makes a client that
trusts the flag (the upstream locker-client: mqtt.js, `clean: false`) subscribe again.
The real client proves it end to end in test_real_client.py; this is the broker's side.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backend.broker import EmbeddedBroker
from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    DEVICE_PASSWORDS,
    PINNED_IDS,
    TIMEOUT,
    client,
    connect_packet,
    embedded_broker,
    running_hook,
)

A_COMMAND = f"locker/{DEVICE_A}/command"
PERSISTENT_ID = PINNED_IDS[DEVICE_A]  # its pinned client id (DESIGN section 4)


async def _session_present(broker: EmbeddedBroker) -> int:
    """CONNECT with clean_session=False as device A; the CONNACK's session-present flag."""
    packet = connect_packet(
        PERSISTENT_ID, DEVICE_A, DEVICE_PASSWORDS[DEVICE_A],
        will_topic=f"locker/{DEVICE_A}/state", will_payload=b"{}", clean_session=False,
    )  # fmt: skip
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    try:
        writer.write(packet)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            connack = await reader.readexactly(4)
        assert connack[0] == 0x20 and connack[3] == 0, connack
        writer.write(b"\xe0\x00")  # DISCONNECT: no will
        await writer.drain()
        return connack[2] & 1
    finally:
        writer.close()


async def _subscribe_once(broker: EmbeddedBroker) -> None:
    async with client(broker, DEVICE_A, identifier=PERSISTENT_ID, clean_session=False) as dev:
        await dev.subscribe(A_COMMAND, qos=1)
    await broker.wait_until(lambda: not broker.is_connected(PERSISTENT_ID))


async def test_a_session_without_subscriptions_after_a_restart_is_reported_new(
    tmp_path: Path,
) -> None:
    pytest.importorskip("aiosqlite")
    async with running_hook() as hook:
        first = embedded_broker(hook, tmp_path, persistence=True)
        async with first:
            await _subscribe_once(first)
            # same broker run: the subscription is alive, the session is present
            assert await _session_present(first) == 1
        second = embedded_broker(hook, tmp_path, persistence=True)
        async with second:
            assert second.has_session(PERSISTENT_ID), "the session itself was restored"
            assert await _session_present(second) == 0, "it lost its subscriptions: not present"
            await _device_trusting_the_flag_receives(second)


async def _device_trusting_the_flag_receives(broker: EmbeddedBroker) -> None:
    """A device that subscribes again because it was told "no session" gets its commands."""
    dev = client(broker, DEVICE_A, identifier=PERSISTENT_ID, clean_session=False)
    async with dev, client(broker, BACKEND_USER) as backend:
        await dev.subscribe(A_COMMAND, qos=1)
        await backend.publish(A_COMMAND, b"after-restart", qos=1)
        async with asyncio.timeout(TIMEOUT):
            async for message in dev.messages:
                assert message.payload == b"after-restart"
                break
