"""A device connecting with its pinned client id never inherits the session the
provisioning account left under that id (DESIGN section 4); a second connection under a
client id closes the first for real (embedded broker, issue 14)."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest

from backend.broker import EmbeddedBroker
from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    PINNED_IDS,
    PROVISIONING_USER,
    client,
    embedded_broker,
    running_hook,
)


def _filters_of(broker: EmbeddedBroker, client_id: str) -> set[str]:
    inner = broker._broker
    assert inner is not None
    return {
        topic
        for topic, subscribers in inner.subscriptions.items()
        for session, _qos in subscribers
        if session.client_id == client_id
    }


async def test_the_provisioning_session_is_discarded_not_inherited(tmp_path: Path) -> None:
    pinned = PINNED_IDS[DEVICE_A]
    reply = f"locker/provisioning/reply/{pinned}"
    async with running_hook() as hook, embedded_broker(hook, tmp_path) as broker:
        async with client(broker, PROVISIONING_USER, identifier=pinned, clean_session=False) as p:
            await p.subscribe(reply, qos=1)
        await broker.wait_until(lambda: not broker.is_connected(pinned))
        assert _filters_of(broker, pinned) == {reply}  # the session the device would resume
        async with client(broker, DEVICE_A, identifier=pinned, clean_session=False) as dev:
            await dev.subscribe(f"locker/{DEVICE_A}/command", qos=1)
            assert _filters_of(broker, pinned) == {f"locker/{DEVICE_A}/command"}
            session = broker._session(pinned)
            assert session is not None and session.username == DEVICE_A


async def test_a_second_connection_under_an_id_closes_the_first(tmp_path: Path) -> None:
    async with running_hook() as hook, embedded_broker(hook, tmp_path) as broker:
        first = client(broker, BACKEND_USER, identifier="locker-backend", clean_session=False)
        async with first:
            await first.subscribe("locker/+/state", qos=1)
            async with client(broker, BACKEND_USER, identifier="locker-backend"):
                pass
            # the first connection was closed by the broker, not left open and deaf
            await broker.wait_until(lambda: not broker.is_connected("locker-backend"))
            with pytest.raises(aiomqtt.MqttError):
                await first.publish("server/status", b"{}", qos=1, timeout=2)
