"""`locker-console hook`: the broker's auth hook as its own small process (DESIGN 5.1).

Mosquitto (go-auth) asks the hook about every login, subscription and delivery, and
disconnects a client whose check fails. Serving the hook from the backend made every
backend restart or crash the whole fleet's; this process does nothing else, so the MQTT
runtime, the REST API and the console can stop, crash or be upgraded while the fleet
stays connected.

What it serves on HOOK_HOST:HOOK_PORT (127.0.0.1:8081):

* the three hook routes (``backend.http.hook``), deciding from an in-memory directory
  loaded from the store at start, kept current by the store's change feed (PostgreSQL
  LISTEN/NOTIFY, SQLite: the event tail) and filled from the store on a miss, so a device
  provisioned by any instance is known at its first CONNECT;
* ``GET /healthz`` (200 when the store answers) and ``GET /metrics`` (the hook series:
  answers by result, latency histogram, store look-ups).

It needs MOSQ_SECRET, MQTT_PASSWORD and MQTT_PROVISIONING_PASSWORD from the environment
(or .env) and never generates them: a hook with a secret of its own would refuse the
broker. It never migrates the schema (`locker-console db upgrade` does). It reads the
store through `backend.hook_store` (plain drivers, no ORM): its start time is what a
restart costs (bench/hook_start.py).

Several hook processes may serve one broker: the port is bound with SO_REUSEPORT, so a
second process on the same port shares the connections (the kernel spreads them), and a
restart of one at a time is invisible. Under systemd the socket unit
(`deploy/locker-console-hook.socket`) holds the listening socket and passes it in
(LISTEN_FDS, socket activation): connections made while the process restarts wait in the
socket's backlog instead of being refused, so a restart that is back within go-auth's
`auth_opt_http_timeout` (5 s) goes unnoticed by the devices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Final

from aiohttp import web

from backend.config import Settings, SettingsError
from backend.event_wait import wait_event
from backend.hook_store import HookStore
from backend.http.credential_sync import CredentialSync
from backend.http.hook import HookMetrics, add_hook_routes
from backend.http.listening import start_site
from backend.http.users import UserDirectory
from backend.store.change_feed import SQLITE_TAIL_INTERVAL, first_line, listen_for_changes

__all__ = ["HOOK_SECRETS", "HookProcess", "inherited_socket", "require_secrets", "run_hook"]

log = logging.getLogger(__name__)

HOOK_SECRETS: Final = ("mosq_secret", "mqtt_password", "mqtt_provisioning_password")
SD_LISTEN_FDS_START: Final = 3
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def require_secrets(settings: Settings) -> None:
    """SettingsError naming the first secret the hook needs and does not have (or saying
    that AUTH_MODE=dynsec has no hook to run)."""
    if getattr(settings, "dynsec", False):
        raise SettingsError(
            "AUTH_MODE=dynsec: Mosquitto decides alone (dynamic-security plugin); "
            "there is no hook to run"
        )
    for name in HOOK_SECRETS:
        value = getattr(settings, name)
        if value is None or not value.get_secret_value():
            raise SettingsError(
                f"{name.upper()} is not set: the hook never generates secrets; "
                "give it the same value as the backend (environment or .env)"
            )


def inherited_socket() -> socket.socket | None:
    """The listening socket passed by systemd socket activation (LISTEN_FDS/LISTEN_PID),
    or None. The variables are removed so child processes do not take it too."""
    fds = os.environ.get("LISTEN_FDS")
    pid = os.environ.get("LISTEN_PID")
    if not fds or pid != str(os.getpid()):
        return None
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if int(fds) != 1:
        raise SettingsError(f"socket activation passed {fds} sockets; the hook takes exactly 1")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(False)
    return sock


class HookProcess:
    """The hook's app, server and store follower, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        sock: socket.socket | None = None,
        fallback_interval: float = 1.0,
        lookup_concurrency: int = 4,
    ) -> None:
        require_secrets(settings)
        self.settings = settings
        self.store = HookStore(settings.db_url)
        self.metrics = HookMetrics()
        self.directory = UserDirectory.of(settings)
        self.sync = CredentialSync.of(self.directory)
        self._sock = sock
        self._interval = fallback_interval if self.store.is_postgres else SQLITE_TAIL_INTERVAL
        self._gate = asyncio.Semaphore(lookup_concurrency)
        self._wake = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self) -> None:
        """Load the directory, start following the store, listen. SettingsError with one
        line for the operator when the store or the port is not usable."""
        started = time.monotonic()
        settings = self.settings
        try:
            position, devices = await self.store.load()
        except Exception as exc:
            raise SettingsError(
                f"the hook cannot read the store (DATABASE_URL; run `locker-console db "
                f"upgrade` first): {first_line(exc)}"
            ) from None
        for uuid, digest, client_id, online in devices:
            try:
                self.directory.device_provisioned(uuid, digest, client_id)
                self.directory.bank_online(uuid, online)
            except ValueError as exc:
                log.error("bank %s not loaded into the auth directory: %s", uuid, exc)
        self.sync.position = position
        self._tasks.append(asyncio.create_task(self._follow(), name="hook-follower"))
        if self.store.is_postgres:
            self._tasks.append(
                asyncio.create_task(
                    listen_for_changes(settings.db_url, self._wake.set), name="hook-change-feed"
                )
            )
        app = web.Application()
        previous = settings.mosq_secret_previous
        add_hook_routes(
            app,
            self.directory,
            settings.secret("mosq_secret"),
            legacy_status=lambda: settings.mqtt_accept_legacy_status,
            metrics=self.metrics,
            lookup=self._lookup,
            previous_secret=previous.get_secret_value() if previous is not None else None,
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site: web.BaseSite
        if self._sock is not None:
            site = web.SockSite(runner, self._sock)
            where = f"inherited socket {self._sock.getsockname()}"
        else:
            site = web.TCPSite(runner, settings.hook_host, settings.hook_port, reuse_port=True)
            where = f"{settings.hook_host}:{settings.hook_port}"
        await start_site(
            runner,
            site,
            in_use=lambda: SettingsError(
                f"HOOK_PORT {settings.hook_port} is in use on {settings.hook_host} by a "
                "process that is not a hook; stop it or set HOOK_PORT"
            ),
            cannot=lambda exc: SettingsError(
                f"cannot listen on {where} (HOOK_HOST/HOOK_PORT): {exc}"
            ),
        )
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else settings.hook_port
        log.info(
            "auth hook listening on %s (%d devices at event position %d, ready in %.2f s)",
            where,
            self.directory.device_count,
            position,
            time.monotonic() - started,
        )

    async def stop(self) -> None:
        """Stop listening, finish the answers in flight, stop following the store."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.store.close()
        log.info("auth hook stopped")

    async def _lookup(self, username: str) -> None:
        """A directory miss: the bank's newest credential event, from the store."""
        async with self._gate:
            change = await self.store.latest(username)
        if change is not None:
            self.sync.apply_changes([change])

    async def _follow(self) -> None:
        """Apply credential changes from any process: woken by the change feed
        (PostgreSQL), else every interval (SQLite's tail; PostgreSQL's fallback)."""
        failing = False
        while True:
            self._wake.clear()
            try:
                position = self.sync.position or 0
                changes, mark = await self.store.changes_after(position)
                self.sync.apply_changes(changes)
                self.sync.position = mark
                if failing:
                    log.info("hook: store reachable again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("hook: reading the store failed: %s", first_line(exc))
                failing = True
            await wait_event(self._wake, self._interval)

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = await self.store.ping()
        return web.json_response(
            {"status": "ok" if ok else "degraded", "database": ok, "pid": os.getpid()},
            status=200 if ok else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = "\n".join(self.metrics.exposition()) + "\n"
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


async def run_hook(settings: Settings) -> None:
    """Serve the hook until cancelled (SIGINT/SIGTERM)."""
    hook = HookProcess(settings, sock=inherited_socket())
    try:
        await hook.start()
        await asyncio.Event().wait()
    finally:
        await hook.stop()
