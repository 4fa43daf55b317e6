"""The admin client of Mosquitto's dynamic-security plugin: JSON commands on
`$CONTROL/dynamic-security/v1`, answers on `.../response`, matched by `correlationData`.

It connects with its own account (`DYNSEC_ADMIN_USER`, never the backend's MQTT account),
keeps one connection open (`start`) or connects for one call (`session`, what the CLI
uses), waits for every answer, and retries a batch whose answer did not come (lost
connection, timeout): callers send only idempotent batches. A command the plugin answers
with an error is not retried; the caller decides whether that error means "already so".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import aiomqtt

from backend.dynsec.policy import CONTROL_TOPIC, RESPONSE_TOPIC

log = logging.getLogger(__name__)

Command = dict[str, Any]
MAX_BATCH = 100
"""Commands per control message (the plugin answers them in one response)."""


class DynsecError(RuntimeError):
    """The plugin could not be reached or did not answer; the message is for the operator."""


class DynsecAdmin:
    """Commands to the plugin, answered and retried."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        on_connect: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.timeout = timeout
        self.attempts = attempts
        self._on_connect = on_connect
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[list[Command]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._hook_task: asyncio.Task[None] | None = None
        self.last_error: str = ""
        self.commands_sent = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ----- connection ----------------------------------------------------------------

    async def start(self) -> None:
        """Keep a connection open in the background (reconnecting with backoff)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dynsec-admin")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[DynsecAdmin]:
        """Connected for the duration of the block (one-shot use, e.g. the CLI)."""
        if self._task is not None:
            yield self
            return
        await self.start()
        try:
            yield self
        finally:
            await self.close()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self._password,
                    identifier=f"locker-dynsec-admin-{secrets.token_hex(8)}",
                    keepalive=30,
                    timeout=self.timeout,
                ) as client:
                    await client.subscribe(RESPONSE_TOPIC, qos=1)
                    self._client = client
                    self._connected.set()
                    self.last_error = ""
                    delay = 0.2
                    if self._on_connect is not None:
                        self._hook_task = asyncio.create_task(self._on_connect())
                    async for message in client.messages:
                        self._answer(message.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"dynsec admin connection: {exc or exc.__class__.__name__}"
                log.warning("%s; retrying in %.1f s", self.last_error, delay)
            finally:
                self._client = None
                self._connected.clear()
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(DynsecError("connection to the broker lost"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _answer(self, payload: object) -> None:
        try:
            body = json.loads(payload if isinstance(payload, (bytes, str)) else b"")
            responses = body["responses"]
            key = str(responses[0].get("correlationData", ""))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            log.warning("unreadable answer on %s", RESPONSE_TOPIC)
            return
        future = self._pending.get(key.split(":", 1)[0])
        if future is not None and not future.done():
            future.set_result(list(responses))

    # ----- commands ------------------------------------------------------------------

    async def execute(self, commands: Sequence[Command]) -> list[Command]:
        """Send the commands (in batches), return one response per command, in order.
        Each response is the plugin's: `{"command", "error"?, "data"?}`."""
        out: list[Command] = []
        for start in range(0, len(commands), MAX_BATCH):
            out.extend(await self._batch(commands[start : start + MAX_BATCH]))
        return out

    async def _batch(self, commands: Sequence[Command]) -> list[Command]:
        last = "no attempt"
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._send_once(commands)
            except (DynsecError, aiomqtt.MqttError, TimeoutError) as exc:
                last = str(exc) or exc.__class__.__name__
                log.info("dynsec command batch failed (attempt %d): %s", attempt, last)
        self.last_error = f"dynsec commands not answered: {last}"
        raise DynsecError(self.last_error)

    async def _send_once(self, commands: Sequence[Command]) -> list[Command]:
        try:
            async with asyncio.timeout(self.timeout):
                await self._connected.wait()
        except TimeoutError:
            raise DynsecError(
                f"cannot reach the broker's dynamic-security plugin at {self.host}:{self.port}"
                + (f" ({self.last_error})" if self.last_error else "")
            ) from None
        client = self._client
        if client is None:
            raise DynsecError("not connected")
        key = secrets.token_hex(8)
        batch = [{**c, "correlationData": f"{key}:{i}"} for i, c in enumerate(commands)]
        future: asyncio.Future[list[Command]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            await client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            self.commands_sent += len(batch)
            async with asyncio.timeout(self.timeout):
                responses = await future
        finally:
            self._pending.pop(key, None)
        by_index: dict[int, Command] = {}
        for response in responses:
            with contextlib.suppress(ValueError, IndexError, AttributeError):
                by_index[int(str(response.get("correlationData")).split(":", 1)[1])] = response
        if len(by_index) != len(batch):
            raise DynsecError("the plugin answered only part of a batch")
        return [by_index[i] for i in range(len(batch))]


def error_of(response: Command) -> str:
    """The plugin's error text of one response, '' if it succeeded."""
    return str(response.get("error") or "")
