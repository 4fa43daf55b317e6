"""ALERT_WEBHOOK_URL: a POST for every alert that opens or resolves.

Subscribed to the events this process records: an event that opens an alert or resolves
one (an acknowledgement, an answer that settles an expiry, a revocation) is posted once,
by the instance that recorded it. A bank-offline alert resolves by time (a minute online):
a periodic check posts those. Body: `{"event": "alert_opened" | "alert_resolved",
"alert": {...}}` (the AlertView as in GET /api/alerts). Delivery is best effort: a failed
POST is logged (without the URL's query, which may hold a secret) and not retried; the
alerts themselves are in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import aiohttp
from yarl import URL

from backend.log_throttle import LogThrottle
from backend.service import LockerService
from backend.store import alert_queries
from backend.store.alert_projection import ALERT_EVENTS
from backend.store.event_store import RecordedEvent
from backend.views import AlertView

log = logging.getLogger(__name__)


class AlertNotifier:
    def __init__(
        self,
        service: LockerService,
        url: str,
        *,
        check_interval: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.url = url
        self._where = str(URL(url).with_query(None).with_user(None).with_password(None))
        self.check_interval = check_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self._checked: datetime | None = None
        self._throttle = LogThrottle("alert webhook failures", logger=log)
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._checked = self.service.clock.now()
        self.service.subscribe(self.on_events)
        self._task = asyncio.create_task(self._resolutions(), name="alert-webhook")

    async def stop(self) -> None:
        self.service.unsubscribe(self.on_events)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._posts:
            await asyncio.wait(self._posts, timeout=2.0)
        if self._session is not None:
            await self._session.close()

    async def on_events(self, recorded: list[RecordedEvent]) -> None:
        relevant = [r for r in recorded if r.event_type in ALERT_EVENTS]
        if not relevant:
            return
        now = self.service.clock.now()
        changes = await self.service.read(alert_queries.changes_for, relevant, now)
        for change, alert in changes:
            self._post(change, alert)

    async def check_resolutions(self) -> int:
        """Post the bank-offline alerts that resolved by time since the last check."""
        now = self.service.clock.now()
        after = self._checked or now
        self._checked = now
        resolved = await self.service.read(alert_queries.resolved_between, after, now)
        for alert in resolved:
            self._post("resolved", alert)
        return len(resolved)

    async def _resolutions(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.check_resolutions()
            except Exception as exc:
                log.warning("alert webhook: checking resolutions failed: %s", exc)

    def _post(self, change: str, alert: AlertView) -> None:
        body = {"event": f"alert_{change}", "alert": alert.to_json()}
        task = asyncio.create_task(self._send(body))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _send(self, body: dict[str, Any]) -> None:
        assert self._session is not None
        try:
            async with self._session.post(self.url, json=body) as response:
                if response.status >= 300:
                    raise aiohttp.ClientError(f"answered {response.status}")
            self.sent += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed += 1
            if self._throttle.allow():
                log.warning("alert webhook %s: %s", self._where, exc or type(exc).__name__)
