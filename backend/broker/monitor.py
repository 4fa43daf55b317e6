"""A tiny amqtt plugin that lets the embedded broker's owner await session changes.

amqtt fires `client_connected`, `client_disconnected` and `retained_message` (also for a
message queued for an offline persistent session) to plugins. This plugin turns them into
an `asyncio.Condition` notification, so callers (tests, health checks) can await a
condition on the broker's real state instead of polling or sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from amqtt.broker import BrokerContext
from amqtt.plugins.base import BasePlugin
from amqtt.session import Session


class ClientMonitorPlugin(BasePlugin[BrokerContext]):
    """Notifies waiters whenever a client connects, disconnects or gets a message queued."""

    def __init__(self, context: BrokerContext) -> None:
        super().__init__(context)
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        await self._notify()

    async def on_broker_client_disconnected(
        self, *, client_id: str, client_session: Session
    ) -> None:
        await self._notify()

    async def on_broker_retained_message(self, **_: Any) -> None:
        await self._notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once `predicate()` holds, re-checked at each event; TimeoutError on timeout."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)
