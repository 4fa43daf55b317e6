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
broker. It never migrates the schema (`locker-console db upgrade` does).

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
import contextlib
import errno
import logging
import os
import socket
import time
from typing import Final

from aiohttp import web

from backend.config import Settings, SettingsError
from backend.http.credentials import StoreLookup, follow_credentials, load_directory
from backend.http.hook import HookMetrics, add_hook_routes
from backend.store.database import Database, first_line

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
    """The hook's app, server and followers, started and stopped together."""

    def __init__(self, settings: Settings, *, sock: socket.socket | None = None) -> None:
        require_secrets(settings)
        self.settings = settings
        self.db = Database(settings.db_url, read_threads=4)
        self.metrics = HookMetrics()
        self._sock = sock
        self._runner: web.AppRunner | None = None
        self._follower: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Load the directory, start following the store, listen. SettingsError with one
        line for the operator when the store or the port is not usable."""
        started = time.monotonic()
        settings = self.settings
        try:
            directory = await load_directory(self, settings)
        except SettingsError:
            raise
        except Exception as exc:
            raise SettingsError(
                f"the hook cannot read the store (DATABASE_URL; run `locker-console db "
                f"upgrade` first): {first_line(exc)}"
            ) from None
        self._follower = asyncio.create_task(
            follow_credentials(self, directory), name="hook-credential-follower"
        )
        app = web.Application()
        add_hook_routes(
            app,
            directory,
            settings.secret("mosq_secret"),
            legacy_status=lambda: settings.mqtt_accept_legacy_status,
            metrics=self.metrics,
            lookup=StoreLookup(self.db, directory),
            previous_secret=(
                settings.mosq_secret_previous.get_secret_value()
                if settings.mosq_secret_previous is not None
                else None
            ),
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
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise SettingsError(
                    f"HOOK_PORT {settings.hook_port} is in use on {settings.hook_host} by a "
                    "process that is not a hook; stop it or set HOOK_PORT"
                ) from None
            raise SettingsError(f"cannot listen on {where} (HOOK_HOST/HOOK_PORT): {exc}") from None
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else settings.hook_port
        log.info(
            "auth hook listening on %s (%d devices, ready in %.2f s)",
            where,
            directory.device_count,
            time.monotonic() - started,
        )

    async def stop(self) -> None:
        """Stop listening, finish the answers in flight, stop following the store."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await asyncio.to_thread(self.db.close)

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = await self.db.read(self.db.ping)
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
