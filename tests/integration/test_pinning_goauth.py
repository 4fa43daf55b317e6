"""Pinned identities (DESIGN section 4) through the real Mosquitto + mosquitto-go-auth:
go-auth sends `clientid` on every login, so the hook refuses what the rules forbid and
Mosquitto never takes a client id over for a refused CONNECT (issue 14, finding 1)."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest

from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    PINNED_IDS,
    PROVISIONING_USER,
    SECRET,
    Address,
    Inbox,
    client,
    running_hook,
)
from tests.support.goauth_broker import goauth_available, run_goauth_mosquitto

pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(not goauth_available(), reason="mosquitto or go-auth.so missing"),
]
BACKEND_ID = "locker-backend"


async def _refused(mqtt: aiomqtt.Client) -> bool:
    try:
        async with mqtt:
            return False
    except aiomqtt.MqttError:
        return True


async def test_hijacks_are_refused_by_mosquitto_with_go_auth(tmp_path: Path) -> None:
    async with running_hook() as hook:
        port = int(hook.url.rsplit(":", 1)[1])
        with run_goauth_mosquitto(tmp_path, hook_port=port, secret=SECRET) as broker:
            endpoint = Address(broker.host, broker.port)
            hook.directory.bank_online(DEVICE_A, True)
            pinned = PINNED_IDS[DEVICE_A]
            backend = client(endpoint, BACKEND_USER, identifier=BACKEND_ID)
            device = client(endpoint, DEVICE_A, identifier=pinned, clean_session=False)
            async with backend, device:
                await backend.subscribe(f"locker/{DEVICE_A}/state", qos=1)
                inbox = Inbox(backend)
                attacks = [
                    client(endpoint, PROVISIONING_USER, identifier=BACKEND_ID),
                    client(endpoint, PROVISIONING_USER, identifier=BACKEND_ID + "-b"),
                    client(endpoint, PROVISIONING_USER, identifier=pinned),
                    client(endpoint, DEVICE_A, identifier=BACKEND_ID),
                    client(endpoint, DEVICE_A, identifier="not-its-id"),
                ]
                accepted = [a._client._client_id for a in attacks if not await _refused(a)]
                assert accepted == []
                # both victims are still connected and served
                await device.publish(f"locker/{DEVICE_A}/state", b'{"after":1}', qos=1)
                await inbox.wait_for(f"locker/{DEVICE_A}/state", b'{"after":1}')
            refusals = hook.directory.refused_connects()
            assert refusals["reserved_client_id"] == 3
            assert refusals["pinned_id_of_online_bank"] == 1
            assert refusals["client_id_not_pinned"] == 1
            # the bank offline: its own device may provision again with its pinned id
            hook.directory.bank_online(DEVICE_A, False)
            async with client(endpoint, PROVISIONING_USER, identifier=pinned):
                pass
