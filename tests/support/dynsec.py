"""Helpers for the `AUTH_MODE=dynsec` tests: a backend whose embedded broker is a real
Mosquitto 2.0 with its dynamic-security plugin, and a device that provisions itself over
raw MQTT the way the upstream client does (nothing of ours on the device side)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from backend.broker.mosquitto import find_mosquitto, find_plugin
from backend.config import Settings
from backend.runner import BackendServices
from tests.conftest import make_settings
from tests.support.mosquitto import free_port

needs_dynsec = pytest.mark.skipif(
    find_mosquitto() is None or find_plugin() is None,
    reason="needs mosquitto and mosquitto_dynamic_security.so",
)


def dynsec_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "locker_broker": "mosquitto",
        "mqtt_port": free_port(),
        "http_port": free_port(),
        "dynsec_admin_password": "admin-pw",
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@asynccontextmanager
async def dynsec_backend(settings: Settings) -> AsyncIterator[BackendServices]:
    """The backend with its private Mosquitto (dynsec), connected and subscribed."""
    async with BackendServices(settings) as services:
        async with asyncio.timeout(10):
            await services.runtime.state.wait_for(True)
        yield services


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    client_id: str


async def provision(
    settings: Settings, token: str, client_id: str, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Register as a new device does: connect as the provisioning account with our own
    client id, subscribe to our reply topic, publish the token; return the reply."""
    reply_topic = f"locker/provisioning/reply/{client_id}"
    async with aiomqtt.Client(
        "127.0.0.1",
        settings.mqtt_port,
        username=settings.mqtt_provisioning_user,
        password=settings.secret("mqtt_provisioning_password"),
        identifier=client_id,
    ) as client:
        await client.subscribe(reply_topic, qos=1)
        await client.publish(
            f"locker/register/{token}", json.dumps({"client_id": client_id}), qos=1
        )
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                if str(message.topic) == reply_topic:
                    reply: dict[str, Any] = json.loads(message.payload)  # type: ignore[arg-type]
                    return reply
    raise AssertionError("no provisioning reply")


async def provisioned_device(
    services: BackendServices, client_id: str, name: str = "bank"
) -> Credentials:
    created = await services.service.create_bank(name, "test", 4)
    reply = await provision(services.settings, created.token, client_id)
    assert reply["status"] == "success", reply
    assert reply["data"]["mqtt_user"] == created.uuid
    return Credentials(created.uuid, reply["data"]["mqtt_password"], client_id)


async def admin_command(settings: Settings, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    """Commands to the plugin from a fresh admin connection (independent of the backend)."""
    from backend.dynsec.admin import DynsecAdmin

    admin = DynsecAdmin(
        "127.0.0.1",
        settings.mqtt_port,
        settings.dynsec_admin_user,
        settings.secret("dynsec_admin_password"),
    )
    async with admin.session():
        return await admin.execute(list(commands))
