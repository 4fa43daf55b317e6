"""Health and status: is the database answering, is the broker connected.

``GET /healthz`` (no token; for systemd, load balancers, uptime checks) answers
200 when both are fine and 503 otherwise, with the details as JSON.
``GET /api/status`` answers the ``SystemStatus`` an attached console shows in
its status line. The broker's state comes from a callable the MQTT runtime
provides; without one the broker is reported as not connected, because nobody
can vouch for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from aiohttp import web

from backend.gateway import SystemStatus, runtime_conditions
from backend.http.schemas import HealthCheck, HealthReport
from backend.run_mode import RunMode
from backend.service import LockerService
from backend.store.database import WRITABLE_TIMEOUT

__all__ = ["DB_PING_TIMEOUT", "HealthMonitor"]

log = logging.getLogger(__name__)
DB_PING_TIMEOUT: Final = 3.0


class HealthMonitor:
    """Checks the database and asks the broker callables; shared by /healthz and /api/status."""

    def __init__(
        self,
        service: LockerService,
        *,
        broker_connected: Callable[[], bool] | None = None,
        broker_detail: Callable[[], str] | None = None,
        run_mode: RunMode = RunMode.HEADLESS,
        ping_timeout: float = DB_PING_TIMEOUT,
    ) -> None:
        self.service = service
        self._broker_connected = broker_connected
        self._broker_detail = broker_detail
        self.run_mode = run_mode
        self._ping_timeout = ping_timeout

    async def database_problem(self) -> str | None:
        """None when the database answers and takes a write transaction, else what failed."""
        if not await self.database_ok():
            return "down (no answer)"
        db = self.service.db
        try:
            async with asyncio.timeout(self._ping_timeout + WRITABLE_TIMEOUT):
                problem = await db.read(db.write_problem)
        except Exception as exc:  # a timeout, a closed executor
            problem = type(exc).__name__
        return None if problem is None else f"answering, not writable: {problem}"

    async def database_ok(self) -> bool:
        """True if the database answers ``SELECT 1`` within the ping timeout."""
        db = self.service.db
        try:
            async with asyncio.timeout(self._ping_timeout):
                return bool(await db.read(db.ping))
        except Exception:  # a timeout, a closed executor: either way not ok
            return False

    def broker_connected(self) -> bool:
        if self._broker_connected is None:
            return False
        try:
            return bool(self._broker_connected())
        except Exception:
            log.exception("broker_connected provider failed")
            return False

    def broker_detail(self) -> str:
        if self._broker_connected is None:
            return "broker connectivity is not reported by this process"
        if self._broker_detail is None:
            return ""
        try:
            return str(self._broker_detail())
        except Exception:
            log.exception("broker_detail provider failed")
            return ""

    def conditions(self, database_ok: bool) -> dict[str, bool]:
        """Runtime conditions of this instance (DESIGN section 7: not stored, not alerts)."""
        return runtime_conditions(self.service, self.broker_connected(), database_ok)

    async def status(self) -> SystemStatus:
        """What ``GET /api/status`` answers."""
        database_ok = await self.database_ok()
        conditions = self.conditions(database_ok)
        return SystemStatus(
            broker_connected=self.broker_connected(),
            database_ok=database_ok,
            broker_detail=self.broker_detail(),
            mode=self.run_mode,
            conditions=[name for name, held in conditions.items() if held],
            open_ttl_seconds=self.service.settings.open_ttl_seconds,
        )

    async def report(self) -> HealthReport:
        """What ``GET /healthz`` answers: the database answering *and* writable, the broker
        path working (connected, our session still receives), each saying what failed."""
        database_problem = await self.database_problem()
        database_ok = database_problem is None
        broker_ok = self.broker_connected()
        detail = self.broker_detail()
        conditions = [name for name, held in self.conditions(database_ok).items() if held]
        accounts = self.service.accounts.health()
        accounts_ok = accounts is None or accounts.ok
        return HealthReport(
            status="ok"
            if database_ok and broker_ok and accounts_ok and not conditions
            else "unavailable",
            conditions=conditions,
            database=HealthCheck(
                ok=database_ok,
                detail=f"{self.service.db.dialect} "
                + ("answering, writable" if database_problem is None else database_problem),
            ),
            broker=HealthCheck(
                ok=broker_ok, detail=detail or ("connected" if broker_ok else "disconnected")
            ),
            accounts=None
            if accounts is None
            else HealthCheck(ok=accounts.ok, detail=accounts.detail),
        )

    async def healthz(self, request: web.Request) -> web.Response:
        """``GET /healthz``."""
        report = await self.report()
        return web.json_response(
            report.model_dump(mode="json", exclude_none=True),
            status=200 if report.status == "ok" else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def api_status(self, request: web.Request) -> web.Response:
        """``GET /api/status``."""
        return web.json_response((await self.status()).to_json())
