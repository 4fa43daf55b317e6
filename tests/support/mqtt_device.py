"""A minimal locker device on raw aiomqtt, for the MQTT runtime tests.

It provisions with a token, connects as its bank (username = uuid, persistent
session, last will on `locker/{u}/state`), reconnects when the broker goes away,
publishes heartbeats, and executes each command at most once: a repeated
`transaction_id` gets the stored response again, and a command received after its
`expires_at` is refused with `COMMAND_EXPIRED` and not executed. With `hold=True`
commands are only collected, and `answer_held()` answers them later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from backend.domain.contract import (
    Command,
    CommandResponse,
    ConnectionLost,
    Heartbeat,
    HeartbeatData,
    ProvisioningReply,
    parse,
)
from backend.domain.topics import command_topic, device_topic, register_topic, reply_topic


def now() -> datetime:
    return datetime.now(UTC)


async def provision(host: str, port: int, token: str, timeout: float = 10.0) -> ProvisioningReply:
    """Register with `token` as the provisioning client; return the reply."""
    client_id = f"prov-{uuid.uuid4().hex[:12]}"
    async with aiomqtt.Client(
        host, port, identifier=client_id, username="provisioning_client"
    ) as c:
        await c.subscribe(reply_topic(client_id), qos=1)
        body = json.dumps({"client_id": client_id}).encode()
        await c.publish(register_topic(token), body, qos=1)
        async with asyncio.timeout(timeout):
            async for message in c.messages:
                return parse(ProvisioningReply, bytes(message.payload))
    raise AssertionError("no provisioning reply")


@dataclass
class Received:
    """A command as the device saw it."""

    command: Command
    at: datetime
    raw: bytes


@dataclass
class TestDevice:
    """One bank's device. Use as an async context manager (connects and keeps connected)."""

    host: str
    port: int
    bank_uuid: str
    password: str = "device-password"
    hold: bool = False
    heartbeat_every: float | None = None
    received: list[Received] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    responses: dict[str, bytes] = field(default_factory=dict)
    held: list[Received] = field(default_factory=list)
    connects: int = 0
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None
    _beat_task: asyncio.Task[None] | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _new_command: asyncio.Event = field(default_factory=asyncio.Event)
    _started: float = 0.0

    __test__ = False  # not a pytest class

    @property
    def client_id(self) -> str:
        return self.bank_uuid  # a bank connects with its pinned client id or its UUID

    async def __aenter__(self) -> TestDevice:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 10.0) -> None:
        self._connected.clear()
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(timeout):
            await self._connected.wait()
        if self.heartbeat_every:
            self._beat_task = asyncio.create_task(self._beat_loop(self.heartbeat_every))

    async def stop(self) -> None:
        """Disconnect cleanly (no last will)."""
        for task in (self._beat_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
        self._task = self._beat_task = None
        self._client = None

    async def crash(self) -> None:
        """Drop the TCP connection without a DISCONNECT, so the broker sends the last will."""
        client = self._client
        assert client is not None, "not connected"
        paho = client._client  # the paho client underneath: its socket is the only way
        sock = paho.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        await self.stop()

    def _make_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            device_topic(self.bank_uuid, "state"),
            ConnectionLost(timestamp=now(), reason="mqtt_last_will").to_bytes(),
            qos=1,
            retain=False,
        )
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=self.bank_uuid,
            password=self.password,
            clean_session=False,
            will=will,
            keepalive=5,
        )

    async def _run(self) -> None:
        while True:
            try:
                async with self._make_client() as client:
                    await client.subscribe(command_topic(self.bank_uuid), qos=1)
                    self._client = client
                    self.connects += 1
                    self._connected.set()
                    async for message in client.messages:
                        await self._on_command(bytes(message.payload))
            except aiomqtt.MqttError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None  # stop() must stop us
                self._client = None
                self._connected.clear()
                await asyncio.sleep(0.05)  # reconnect backoff, not a wait for a condition

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    # ----- commands ----------------------------------------------------------------------

    async def _on_command(self, raw: bytes) -> None:
        command = parse(Command, raw)
        item = Received(command, now(), raw)
        self.received.append(item)
        self._new_command.set()
        if self.hold:
            self.held.append(item)
            return
        await self._answer(item)

    async def _answer(self, item: Received) -> None:
        command = item.command
        tid = command.transaction_id
        stored = self.responses.get(tid)
        if stored is None:
            if item.at > command.expires_at:
                response = self._response(command, "error", error_code="COMMAND_EXPIRED")
            else:
                self.executed.append(tid)
                response = self._response(command, "success")
            stored = self.responses[tid] = response.to_bytes()
        await self.publish("response", stored)

    @staticmethod
    def _response(command: Command, result: str, error_code: str | None = None) -> CommandResponse:
        applied = None
        if command.action == "apply_config":
            applied = command.config_data().config_hash
        return CommandResponse(
            action=command.action,
            result=result,  # type: ignore[arg-type]  # any string, as a device sends
            transaction_id=command.transaction_id,
            timestamp=now(),
            error_code=error_code,
            applied_config_hash=applied,
        )

    async def answer_held(self) -> None:
        held, self.held = self.held, []
        for item in held:
            await self._answer(item)

    def commands(self, action: str | None = None) -> list[Command]:
        return [r.command for r in self.received if action is None or r.command.action == action]

    async def next_command(self, action: str, timeout: float = 10.0) -> Command:
        """The first received command of `action` (waits for it)."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.commands(action)
                if found:
                    return found[0]
                self._new_command.clear()
                await self._new_command.wait()

    async def wait_for_command(self, transaction_id: str, timeout: float = 10.0) -> Command:
        async with asyncio.timeout(timeout):
            while True:
                for c in self.commands():
                    if c.transaction_id == transaction_id:
                        return c
                self._new_command.clear()
                await self._new_command.wait()

    # ----- publishing --------------------------------------------------------------------

    async def publish(self, suffix: str, payload: bytes, *, retain: bool = False) -> None:
        await self.wait_connected()
        assert self._client is not None
        await self._client.publish(
            device_topic(self.bank_uuid, suffix), payload, qos=1, retain=retain
        )

    async def heartbeat(self, *, sent_at: datetime | None = None, retain: bool = True) -> None:
        beat = Heartbeat(data=HeartbeatData(timestamp=sent_at or now(), uptime_seconds=12.5))
        await self.publish("state", beat.to_bytes(), retain=retain)

    async def _beat_loop(self, every: float) -> None:
        while True:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self.heartbeat()
            await asyncio.sleep(every)  # the device's own heartbeat period


@contextlib.asynccontextmanager
async def raw_client(host: str, port: int, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
    """A plain client for publishing garbage or watching topics."""
    kwargs.setdefault("identifier", f"raw-{uuid.uuid4().hex[:10]}")
    async with aiomqtt.Client(host, port, **kwargs) as client:
        yield client
