"""Real parts for the embedded-broker tests: the auth hook over HTTP, MQTT clients, a raw CONNECT.

The hook is the project's own (`backend.http.hook.add_hook_routes` over a
`backend.http.users.UserDirectory`), served by aiohttp on a free loopback port, with one
test-only middleware in front that records every call and can hold or deny chosen ACL
checks. Users: the backend, two provisioned devices A and B (DESIGN section 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
from aiohttp import web

from backend.broker import EmbeddedBroker
from backend.domain.digests import secret_digest
from backend.http.hook import add_hook_routes
from backend.http.users import UserDirectory
from tests.support.mosquitto import free_port

SECRET = "test-mosq-secret-0123456789abcdef"
BACKEND_USER = "locker_backend"
BACKEND_PASSWORD = "backend-password"
PROVISIONING_USER = "provisioning_client"
PROVISIONING_PASSWORD = "provisioning-password"
DEVICE_A = "0a0a0a0a-0000-4000-8000-00000000000a"
DEVICE_B = "0b0b0b0b-0000-4000-8000-00000000000b"
DEVICE_PASSWORDS = {DEVICE_A: "password-of-a", DEVICE_B: "password-of-b"}
PINNED_IDS = {DEVICE_A: "device-a-persistent"}
"""Client ids the banks registered with (DESIGN section 4); otherwise they use their UUID."""
TIMEOUT = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class HookCall:
    """One request the broker made to the hook: the endpoint and its JSON body."""

    path: str
    body: dict[str, Any]

    @property
    def acc(self) -> int | None:
        value = self.body.get("acc")
        return value if isinstance(value, int) else None

    @property
    def username(self) -> str | None:
        value = self.body.get("username")
        return value if isinstance(value, str) else None

    @property
    def client_id(self) -> str | None:
        value = self.body.get("client_id")
        return value if isinstance(value, str) else None

    @property
    def topic(self) -> str | None:
        value = self.body.get("topic")
        return value if isinstance(value, str) else None


@dataclass
class HookFixture:
    """The running hook plus the test's levers on it."""

    url: str
    directory: UserDirectory
    calls: list[HookCall] = field(default_factory=list)
    #: (client_id, topic) pairs whose acc=1 (receive) checks are answered 403.
    deny_receive: set[tuple[str, str]] = field(default_factory=set)
    #: (client_id, topic) -> event: acc=1 checks for it wait until the event is set.
    hold_receive: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    #: set when a held check has arrived, keyed like `hold_receive`.
    held: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def acl_calls(self, *, acc: int | None = None, client_id: str | None = None) -> list[HookCall]:
        """The ACL checks asked so far, optionally only of one `acc` and one client."""
        return [
            c
            for c in self.calls
            if c.path.endswith("/acl")
            and (acc is None or c.acc == acc)
            and (client_id is None or c.client_id == client_id)
        ]

    def hold(self, client_id: str, topic: str) -> asyncio.Event:
        """Make acc=1 checks of `client_id` on `topic` wait; returns the release event."""
        key = (client_id, topic)
        self.held[key] = asyncio.Event()
        self.hold_receive[key] = asyncio.Event()
        return self.hold_receive[key]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        call = HookCall(request.path, body if isinstance(body, dict) else {})
        self.calls.append(call)
        if call.acc == 1 and call.client_id and call.topic:
            key = (call.client_id, call.topic)
            if key in self.hold_receive:
                self.held[key].set()
                await self.hold_receive[key].wait()
            if key in self.deny_receive:
                return web.json_response({"ok": False, "error": "test denies"}, status=403)
        return await handler(request)


def make_directory() -> UserDirectory:
    directory = UserDirectory(
        BACKEND_USER, BACKEND_PASSWORD, PROVISIONING_USER, PROVISIONING_PASSWORD
    )
    for uuid, password in DEVICE_PASSWORDS.items():
        directory.device_provisioned(uuid, secret_digest(password), PINNED_IDS.get(uuid))
    return directory


@contextlib.asynccontextmanager
async def running_hook() -> AsyncIterator[HookFixture]:
    """Serve the real auth hook on a free loopback port."""
    hook = HookFixture(url="", directory=make_directory())
    app = web.Application(middlewares=[hook.middleware])
    add_hook_routes(app, hook.directory, SECRET)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    hook.url = f"http://127.0.0.1:{port}"
    try:
        yield hook
    finally:
        for release in hook.hold_receive.values():
            release.set()
        await runner.cleanup()


def embedded_broker(
    hook: HookFixture, data_dir: Path, *, persistence: bool = False, port: int = 0
) -> EmbeddedBroker:
    """An embedded broker on a free port (by default), asking `hook`; no persistence by default."""
    return EmbeddedBroker(
        port=port,
        hook_url=hook.url,
        mosq_secret=SECRET,
        data_dir=data_dir,
        persistence=persistence,
    )


class Endpoint(Protocol):
    """Where an MQTT broker listens (an EmbeddedBroker, or an `Address`)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Address:
    host: str
    port: int


def client(
    broker: Endpoint,
    username: str,
    password: str | None = None,
    *,
    identifier: str | None = None,
    clean_session: bool = True,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client of `broker` (MQTT 3.1.1); password defaults to the user's own."""
    if password is None:
        password = {
            BACKEND_USER: BACKEND_PASSWORD,
            PROVISIONING_USER: PROVISIONING_PASSWORD,
        }.get(username) or DEVICE_PASSWORDS[username]
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=password,
        identifier=identifier or (username if username in DEVICE_PASSWORDS else f"{username}-test"),
        clean_session=clean_session,
        will=will,
        timeout=TIMEOUT,
    )


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Inbox:
    """Collects every message a client receives, in order, from a background task."""

    def __init__(self, mqtt: aiomqtt.Client) -> None:
        self.messages: list[Received] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._collect(mqtt))

    async def _collect(self, mqtt: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in mqtt.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                async with self._changed:
                    self.messages.append(
                        Received(str(message.topic), data, message.qos, message.retain)
                    )
                    self._changed.notify_all()

    async def wait_for(self, topic: str, payload: bytes | None = None) -> Received:
        """The first message on `topic` (with `payload`, if given), waiting up to TIMEOUT."""

        def find() -> Received | None:
            for message in self.messages:
                if message.topic == topic and (payload is None or message.payload == payload):
                    return message
            return None

        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    def before(self, marker: Received) -> list[Received]:
        """Everything received before `marker`."""
        return self.messages[: self.messages.index(marker)]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- a raw MQTT 3.1.1 CONNECT, to drop a connection without DISCONNECT ----------------------


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(
    client_id: str,
    username: str,
    password: str,
    *,
    will_topic: str,
    will_payload: bytes,
    will_qos: int = 1,
    clean_session: bool = True,
) -> bytes:
    """A CONNECT with username, password and a will (not retained)."""
    flags = 0x80 | 0x40 | (will_qos << 3) | 0x04 | (0x02 if clean_session else 0)
    variable = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    payload = (
        _utf8(client_id)
        + _utf8(will_topic)
        + struct.pack("!H", len(will_payload))
        + will_payload
        + _utf8(username)
        + _utf8(password)
    )
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


@contextlib.asynccontextmanager
async def raw_connection(
    broker: Endpoint, packet: bytes
) -> AsyncIterator[tuple[int, asyncio.StreamWriter]]:
    """Send `packet` (a CONNECT), yield (CONNACK return code, writer); abort on exit."""
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    try:
        writer.write(packet)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            connack = await reader.readexactly(4)
        assert connack[0] == 0x20, connack
        yield connack[3], writer
    finally:
        writer.transport.abort()
