"""A real `locker-console --headless` process with its embedded broker, for the hardening
tests (issue 14): its secrets, its CLI, and the "serving again" condition.

"Serving" = `/healthz` 200 (database writable, broker path working, runtime connected and
subscribed), the MQTT port accepting a CONNECT (CONNACK 0 for the provisioning account).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from backend.domain.contract import ProvisioningReply, parse
from backend.domain.topics import register_topic, reply_topic
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.mosquitto import free_port


@dataclass
class EmbeddedHeadless:
    """One headless backend serving MQTT itself on `mqtt_port`."""

    instance: HeadlessInstance
    mqtt_port: int

    @property
    def url(self) -> str:
        return self.instance.url

    @property
    def data_dir(self) -> Path:
        return Path(self.instance.env["LOCKER_DATA_DIR"])

    @property
    def client_id(self) -> str:
        return self.instance.env["MQTT_CLIENT_ID"]

    def secrets(self) -> dict[str, str]:
        return dict(json.loads((self.data_dir / "secrets.json").read_text()))

    async def cli(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "console.cli",
            *args,
            cwd=self.instance.workdir,
            env=self.instance.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    async def create_bank(self, compartments: int = 2) -> dict[str, Any]:
        """A new bank via the CLI: its uuid and provisioning token."""
        code, out, err = await self.cli(
            "bank", "create", "--name", f"H-{uuid.uuid4().hex[:6]}",
            "--compartments", str(compartments), "--json",
        )  # fmt: skip
        assert code == 0, err
        return dict(json.loads(out))

    def client(self, username: str, password: str, identifier: str, **kw: Any) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            self.mqtt_port,
            username=username,
            password=password,
            identifier=identifier,
            timeout=10,
            **kw,
        )

    def provisioning_client(self, identifier: str, **kw: Any) -> aiomqtt.Client:
        return self.client(
            "provisioning_client",
            self.secrets()["mqtt_provisioning_password"],
            identifier,
            **kw,
        )

    async def provision(
        self, token: str, client_id: str, timeout: float = 15.0
    ) -> ProvisioningReply:
        """The real provisioning flow as the upstream client does it (same client id)."""
        async with self.provisioning_client(client_id) as c:
            await c.subscribe(reply_topic(client_id), qos=1)
            await c.publish(
                register_topic(token), json.dumps({"client_id": client_id}).encode(), qos=1
            )
            async with asyncio.timeout(timeout):
                async for message in c.messages:
                    return parse(ProvisioningReply, bytes(message.payload))
        raise AssertionError("no provisioning reply")

    async def healthz(self, session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        async with session.get(f"{self.url}/healthz") as resp:
            return resp.status, await resp.json()

    async def mqtt_accepts(self) -> bool:
        try:
            async with self.provisioning_client(f"probe-{uuid.uuid4().hex[:8]}"):
                return True
        except (aiomqtt.MqttError, OSError):
            return False

    async def wait_serving(self, session: aiohttp.ClientSession, timeout: float) -> float:
        """Seconds until serving (health 200 and the MQTT port accepting)."""
        start = time.monotonic()
        async with asyncio.timeout(timeout):
            while True:
                assert self.instance.running, f"exited:\n{self.instance.log_tail()}"
                try:
                    status, _ = await self.healthz(session)
                except (aiohttp.ClientError, ValueError):
                    status = 0
                if status == 200 and await self.mqtt_accepts():
                    return time.monotonic() - start
                await asyncio.sleep(0.02)  # polling a condition with a deadline


def embedded_headless(workdir: Path, **settings: str) -> EmbeddedHeadless:
    mqtt_port = free_port()
    instance = headless_instance("h", workdir, {"MQTT_PORT": str(mqtt_port), **settings})
    return EmbeddedHeadless(instance, mqtt_port)
