"""The console's one reader of connectivity and of the stored-event log.

Every poll reads `status()` and the events after the last position seen, keeps the
event tail and bank names in the context, and returns the alerts worth a toast. At
start it finds the end of the log in O(log n) small reads and reads only the tail:
what happened before the console started is shown, never toasted. No Textual here.
"""

from __future__ import annotations

import logging
import time

from backend.gateway import SystemStatus
from backend.views import EventView, TransactionView
from console.alerts import BankName, Toast, event_alerts, status_alerts, transactions_needed
from console.context import EVENT_TAIL, ConsoleContext
from widgets.status_line import Connectivity

log = logging.getLogger(__name__)
PAGE = 500
ALERTS_EVERY = 5.0  # seconds between alert counts while the log does not move
MAX_PAGES_PER_POLL = 20
MAX_DETAILS_PER_POLL = 20


class BackendWatcher:
    """Polls the gateway for connectivity and new events; says what deserves a toast."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.status: SystemStatus | None = None
        self.position: int | None = None  # None until caught up with the stored events
        self._broker_was_up = False
        self._alerts_at = -1
        self._alerts_read = 0.0

    @property
    def ready(self) -> bool:
        """True once connectivity is known and the event log has been read to its end."""
        return self.status is not None and self.position is not None

    async def poll(self) -> list[Toast]:
        """One round: status, then new events. A failure marks the status line stale."""
        alerts: list[Toast] = []
        try:
            alerts += await self._read_status()
            alerts += await self._read_events()
            await self._count_alerts()
        except Exception as exc:
            log.warning("console watcher: %s", exc)
            self.ctx.backend_failed()
        return alerts

    async def _read_status(self) -> list[Toast]:
        gateway = self.ctx.gateway
        status = await gateway.status()
        alerts = status_alerts(self.status, status, was_up=self._broker_was_up)
        self._broker_was_up = self._broker_was_up or status.broker_connected
        self.status = status
        self.ctx.open_ttl = status.open_ttl_seconds
        self.ctx.connectivity = Connectivity(
            broker_connected=status.broker_connected,
            database_ok=status.database_ok,
            broker_detail=status.broker_detail,
            run_mode=status.mode,
            operator=gateway.actor,
            readonly=self.ctx.readonly,
            alerts=self.ctx.connectivity.alerts,
        )
        return alerts

    async def _read_events(self) -> list[Toast]:
        catching_up = self.position is None
        if self.position is None:
            position = max(0, await self.end_position() - EVENT_TAIL)
        else:
            position = self.position
        alerts: list[Toast] = []
        for _ in range(MAX_PAGES_PER_POLL):
            batch = await self.ctx.gateway.events_after(position, PAGE)
            if not batch:
                break
            position = batch[-1].position
            self._remember(batch)
            if not catching_up:
                alerts += await self._alerts(batch)
            if len(batch) < PAGE:
                break
        self.position = position
        self.ctx.position = position
        return alerts

    async def _count_alerts(self) -> None:
        """The open alerts for the status line: when the log moved, else every few seconds."""
        now = time.monotonic()
        if self._alerts_at == self.ctx.position and now - self._alerts_read < ALERTS_EVERY:
            return
        self._alerts_at, self._alerts_read = self.ctx.position, now
        try:
            alerts = await self.ctx.gateway.list_alerts()
        except Exception as exc:  # status() already said whether the backend answers
            log.info("console watcher: no alert count: %s", exc)
            return
        self.ctx.count_alerts(alerts)

    async def end_position(self) -> int:
        """The last stored event's position (0 when there is none)."""
        read = self.ctx.gateway.events_after
        if not await read(0, 1):
            return 0
        low, high = 0, 1024  # there are events after `low`; are there any after `high`?
        while await read(high, 1):
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if await read(middle, 1):
                low = middle
            else:
                high = middle
        return high

    def _remember(self, events: list[EventView]) -> None:
        for event in events:
            if event.event_type == "LockerBankCreated":
                name = str(event.payload.get("name", ""))
                location = str(event.payload.get("location", ""))
                self.ctx.names[event.aggregate_uuid] = BankName(name, location)
        self.ctx.events.extend(events)

    async def _alerts(self, events: list[EventView]) -> list[Toast]:
        transactions: dict[str, TransactionView] = {}
        wanted = transactions_needed(events, self.ctx.mine)[:MAX_DETAILS_PER_POLL]
        for tid in wanted:
            try:
                transactions[tid] = await self.ctx.gateway.get_transaction(tid)
            except Exception as exc:
                log.info("no details for transaction %s: %s", tid, exc)
        return event_alerts(events, self.ctx.names, transactions, self.ctx.mine)
