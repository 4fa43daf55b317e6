"""What the fleet and the operators read about the backend on the broker (DESIGN 4), and
when this instance has caught up after a (re)connect.

* ``server/status`` (retained): ``online`` while ANY instance is left. Every instance's
  last will says ``offline`` there; every live instance that sees ``offline`` (a crashed or
  stopping peer's will or goodbye) re-publishes ``online`` at once, so devices read
  ``offline`` only when no instance is left.
* ``server/status/{MQTT_INSTANCE_ID}`` (retained): this instance's own status with a
  timestamp, re-published every ``refresh`` seconds while it runs and ``offline`` when it
  stops cleanly; after a crash the timestamp stops moving (operators alert on its age).
* Catch-up: the instance status published at connect carries a fresh ``session`` nonce.
  Our subscription to it is in the same session as the fleet's topics, and the broker
  delivers a session's messages in order, so when that message comes back everything the
  broker queued for us while we were away (a persistent session) has been received. Once
  the receive side has handled it too, ``caught_up`` is set: the sweeper waits for it, so
  no bank is called silent and no command is timed out before what the fleet sent during
  our absence has been processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final, Protocol

from backend.config import Settings
from backend.domain.timeutil import Clock, iso
from backend.domain.topics import instance_status_topic

__all__ = ["Presence"]

log = logging.getLogger(__name__)

ONLINE: Final = json.dumps({"status": "online"}).encode()


class _Publisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


class Presence:
    """Server and instance status, the re-publish of ``online``, and catch-up."""

    def __init__(
        self,
        settings: Settings,
        publisher: _Publisher,
        clock: Clock,
        *,
        drained: Callable[[], Awaitable[None]],
        refresh: float = 15.0,
        catch_up_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.instance = settings.mqtt_instance_id
        self.status_topic = settings.mqtt_last_will_topic
        self.instance_topic = instance_status_topic(self.instance)
        self._publisher = publisher
        self._clock = clock
        self._drained = drained
        self._refresh = refresh
        self._catch_up_timeout = catch_up_timeout
        self._session = ""
        self._leaving = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._marker = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.caught_up_at: datetime | None = None
        self.republished = 0

    # ----- subscriptions and routing ------------------------------------------------------

    def filters(self) -> list[tuple[str, int]]:
        """Plain (never shared) subscriptions: every instance must see these itself."""
        return [(self.status_topic, 1), (self.instance_topic, 1)]

    def handles(self, topic: str) -> bool:
        return topic in (self.status_topic, self.instance_topic)

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on one of ``filters()`` (called on the receive path: never blocks)."""
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if topic == self.instance_topic:
            if self._session and data.get("session") == self._session:
                self._marker.set()
            return
        if data.get("status") == "offline" and not self._leaving and self._session:
            # A peer's will or goodbye (or our own previous life's): we are here.
            self._spawn(self._republish_online())

    # ----- lifecycle ----------------------------------------------------------------------

    def connected(self) -> None:
        """A session is up (birth published): announce this instance, start catching up."""
        self._leaving = False
        self._session = secrets.token_hex(8)
        self._marker = asyncio.Event()
        self.caught_up.clear()
        self._spawn(self._catch_up(self._session))
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="instance-status")

    def disconnected(self) -> None:
        """The session is gone: whatever arrives next is a backlog again."""
        self._session = ""
        self.caught_up.clear()

    async def goodbye(self) -> None:
        """Clean stop: this instance offline; ``server/status`` offline unless a peer
        re-publishes ``online`` (it will, if one is left)."""
        self._leaving = True
        await self.close()
        with contextlib.suppress(Exception):
            await self._publish_instance("offline")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._refresher] if self._refresher else [])]
        self._refresher = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----- internals ----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _republish_online(self) -> None:
        try:
            await self._publisher.publish(self.status_topic, ONLINE, qos=1, retain=True)
            self.republished += 1
            log.info("%s said offline (an instance left): re-published online", self.status_topic)
        except Exception as exc:
            log.warning("could not re-publish online on %s: %s", self.status_topic, exc)

    async def _publish_instance(self, status: str, session: str = "") -> None:
        body: dict[str, str] = {
            "status": status,
            "instance": self.instance,
            "client_id": self.settings.mqtt_client_id,
            "timestamp": iso(self._clock.now()),
        }
        if session:
            body["session"] = session
        await self._publisher.publish(
            self.instance_topic, json.dumps(body).encode(), qos=1, retain=True
        )

    async def _catch_up(self, session: str) -> None:
        marker = self._marker
        try:
            await self._publish_instance("online", session)
            async with asyncio.timeout(self._catch_up_timeout):
                await marker.wait()
                await self._drained()
        except TimeoutError:
            log.warning(
                "catch-up after connect not confirmed within %.0f s; sweeping anyway",
                self._catch_up_timeout,
            )
        except Exception as exc:
            log.warning("catch-up marker not published (%s); sweeping anyway", exc)
        if session == self._session:
            self.caught_up_at = self._clock.now()
            self.caught_up.set()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            if self._session:
                with contextlib.suppress(Exception):
                    await self._publish_instance("online")
