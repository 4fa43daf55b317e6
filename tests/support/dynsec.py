"""Helpers for the `AUTH_MODE=dynsec` tests: a backend whose embedded broker is a real
Mosquitto 2.0 with its dynamic-security plugin, and a device that provisions itself over
raw MQTT the way the upstream client does (nothing of ours on the device side)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from backend.broker.mosquitto import find_mosquitto, find_plugin
from backend.config import Settings
from backend.runner import BackendServices
from tests.support.mosquitto import MosquittoBroker, _spawn, free_port
from tests.support.settings import make_settings

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


async def read_until_disconnected(client: aiomqtt.Client) -> None:
    """Read (and drop) messages until the broker ends the connection."""
    with contextlib.suppress(aiomqtt.MqttError):
        async for _message in client.messages:
            pass


def device_client(
    settings: Settings, creds: Credentials, *, identifier: str | None = None
) -> aiomqtt.Client:
    """An MQTT client that logs in to the backend's broker as the provisioned device (with
    its pinned client id unless told otherwise)."""
    return aiomqtt.Client(
        "127.0.0.1",
        settings.mqtt_port,
        username=creds.user,
        password=creds.password,
        identifier=identifier or creds.client_id,
    )


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
                    reply: dict[str, Any] = json.loads(message.payload)
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


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@contextlib.contextmanager
def deployed_dynsec_mosquitto(
    workdir: Path, admin_user: str, admin_password: str
) -> Iterator[MosquittoBroker]:
    """Mosquitto started from deploy/mosquitto-dynsec.conf as shipped, with only the port,
    the paths and the user substituted; its plugin file made by `mosquitto_ctrl dynsec
    init` as the README says (our own writer only where mosquitto_ctrl is missing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    dynsec = workdir / "dynamic-security.json"
    acl = workdir / "locker-provisioning.acl"
    acl.write_text((DEPLOY / "mosquitto-dynsec.acl").read_text())
    ctrl = shutil.which("mosquitto_ctrl")
    if ctrl is not None:
        subprocess.run(
            [ctrl, "dynsec", "init", str(dynsec), admin_user, admin_password],
            check=True,
            capture_output=True,
        )
    else:
        from backend.dynsec.policy import initial_config

        dynsec.write_text(json.dumps(initial_config(admin_user, admin_password)))
    plugin = find_plugin()
    assert plugin is not None
    text = (DEPLOY / "mosquitto-dynsec.conf").read_text()
    substitutions = {
        "listener 1883 0.0.0.0": f"listener {port} 127.0.0.1",
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so": plugin,
        "/var/lib/mosquitto/dynamic-security.json": str(dynsec),
        "/etc/mosquitto/locker-provisioning.acl": str(acl),
    }
    for old, new in substitutions.items():
        assert old in text, f"deploy/mosquitto-dynsec.conf no longer says {old!r}"
        text = text.replace(old, new)
    # What Debian's own mosquitto.conf adds; and the user, as a test may run as root.
    text += f"\nuser {getpass.getuser()}\nlog_dest file {workdir / 'mosquitto.log'}\n"
    config = workdir / f"mosquitto-dynsec-{port}.conf"
    config.write_text(text)
    broker = MosquittoBroker("127.0.0.1", port, _spawn(config, port), config)
    try:
        yield broker
    finally:
        broker.stop()
