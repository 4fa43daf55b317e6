"""Helpers for tests of the HTTP app: a served app on loopback, tokens, SSE frames, waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from backend.http.credentials import load_directory
from backend.http.hook import RedactingAccessLogger
from backend.http.server import PARTS, AppParts, build_app
from backend.service import LockerService

OPERATOR = "ops-desk"
APP = "mobile-app"


@dataclass
class BrokerFlag:
    """A broker state the test can flip (stands in for the MQTT runtime)."""

    connected: bool = True
    detail: str = "connected to 127.0.0.1:1883"

    def is_connected(self) -> bool:
        return self.connected

    def describe(self) -> str:
        return self.detail


@dataclass
class ApiHarness:
    """A built app served on loopback, a client for it, and two tokens."""

    service: LockerService
    app: web.Application
    server: TestServer
    client: TestClient[web.Request, web.Application]
    operator_token: str
    app_token: str
    broker: BrokerFlag
    mqtt_counters: dict[str, Any] = field(default_factory=dict)

    @property
    def parts(self) -> AppParts:
        return self.app[PARTS]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def auth(self, role: str = "operator") -> dict[str, str]:
        token = self.operator_token if role == "operator" else self.app_token
        return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def serve_api(service: LockerService, **build_kwargs: Any) -> AsyncIterator[ApiHarness]:
    """Build the app over ``service`` and serve it with a real socket on 127.0.0.1."""
    operator_token = await service.create_api_token(OPERATOR, "operator")
    app_token = await service.create_api_token(APP, "app")
    broker = BrokerFlag()
    counters: dict[str, Any] = {}
    directory = await load_directory(service, service.settings)
    build_kwargs.setdefault("stream_poll_interval", 0.02)
    build_kwargs.setdefault("credentials_interval", 0.05)
    app = build_app(
        service,
        directory,
        service.settings,
        broker_connected=broker.is_connected,
        broker_detail=broker.describe,
        **{"mqtt_metrics": lambda: counters, **build_kwargs},
    )
    server = TestServer(app)
    await server.start_server(access_log_class=RedactingAccessLogger)
    client: TestClient[web.Request, web.Application] = TestClient(server)
    await client.start_server()
    try:
        yield ApiHarness(service, app, server, client, operator_token, app_token, broker, counters)
    finally:
        await client.close()


@dataclass(frozen=True)
class ProvisionedBank:
    uuid: str
    password: str
    client_id: str


async def provision(
    service: LockerService, name: str = "Hall A", compartments: int = 4
) -> ProvisionedBank:
    """Create a bank and register it as its device would; returns its MQTT password."""
    created = await service.create_bank(name, "Berlin", compartments, actor="setup")
    client_id = f"dev-{created.uuid[:8]}"
    assert await service.devices.register(created.token, client_id) == "success"
    for item in await service.devices.outbox_due(1000):
        if item.kind == "provisioning_reply" and item.bank_uuid == created.uuid:
            password = json.loads(item.payload)["data"]["mqtt_password"]
            return ProvisionedBank(created.uuid, password, client_id)
    raise AssertionError("no provisioning reply in the outbox")


@dataclass(frozen=True)
class SseMessage:
    """One server-sent event (or a comment, with ``comment`` set)."""

    id: str | None = None
    data: str | None = None
    event: str | None = None
    retry: int | None = None
    comment: str | None = None

    def json(self) -> dict[str, Any]:
        assert self.data is not None
        value: dict[str, Any] = json.loads(self.data)
        return value


async def read_sse(content: aiohttp.StreamReader) -> SseMessage:
    """The next SSE message or comment from a response body (EOF: AssertionError)."""
    fields: dict[str, str] = {}
    comment: str | None = None
    while True:
        raw = await content.readline()
        if not raw:
            raise AssertionError("event stream ended")
        line = raw.decode().rstrip("\r\n")
        if not line:
            if fields or comment is not None:
                retry = fields.get("retry")
                return SseMessage(
                    id=fields.get("id"),
                    data=fields.get("data"),
                    event=fields.get("event"),
                    retry=int(retry) if retry else None,
                    comment=comment,
                )
            continue
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        fields[name] = fields[name] + "\n" + value if name in fields and name == "data" else value


async def read_events(
    content: aiohttp.StreamReader, count: int, timeout: float = 5.0
) -> list[SseMessage]:
    """The next ``count`` data messages (comments and ``retry`` skipped)."""
    found: list[SseMessage] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            message = await read_sse(content)
            if message.data is not None:
                found.append(message)
    return found
