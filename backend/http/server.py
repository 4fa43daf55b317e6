"""The HTTP application and its server: auth hook, REST API, event stream, health, metrics.

Wiring for ``--headless`` (or the standalone console's services)::

    directory = await load_directory(service, settings)
    app = build_app(service, directory, settings,
                    broker_connected=runtime.connected, mqtt_metrics=runtime.metrics.snapshot)
    server = HttpServer(app)
    await server.start(settings.http_host, settings.http_port)
    ...
    await server.stop()

``build_app`` subscribes the hook's credential listener and runs the
credential follower (``backend.http.credentials``) for as long as the app is
up, so revocations by this process apply at once and those by other processes
(the CLI) within a second. ``HttpServer`` serves with
``RedactingAccessLogger``, so ``?mosq_secret=`` never reaches the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from backend.config import Settings
from backend.http.api import RestApi
from backend.http.auth import guard_for
from backend.http.credentials import CredentialSync, StoreLookup, follow_credentials
from backend.http.endpoints import Endpoint, register
from backend.http.errors import error_answer, json_errors
from backend.http.event_stream import EventStream
from backend.http.health import HealthMonitor
from backend.http.hook import HookMetrics, RedactingAccessLogger, add_hook_routes
from backend.http.hook_decisions import HookDecisions
from backend.http.listening import start_site
from backend.http.openapi import build_openapi, hook_endpoints
from backend.http.prometheus import CommandLatency, MetricsEndpoint, MqttMetricsProvider
from backend.http.schemas import HealthReport
from backend.http.unrouted import add_unrouted
from backend.http.users import UserDirectory
from backend.run_mode import RunMode
from backend.service import LockerService

__all__ = [
    "PARTS",
    "AppParts",
    "HttpServer",
    "HttpServerError",
    "build_app",
]

log = logging.getLogger(__name__)
OPENAPI_PATH: Final = "/api/openapi.json"


@dataclass(frozen=True)
class AppParts:
    """The pieces of one app, for whoever needs to look inside (tests, the runtime)."""

    service: LockerService
    directory: UserDirectory
    monitor: HealthMonitor
    stream: EventStream
    latency: CommandLatency
    hook_metrics: HookMetrics
    hook_decisions: HookDecisions | None
    """The hook's decisions, asked in process by the embedded amqtt broker (None under dynsec)."""
    metrics: MetricsEndpoint
    openapi: dict[str, Any]
    endpoints: tuple[Endpoint, ...]


PARTS: Final = web.AppKey("locker_parts", AppParts)


def build_app(
    service: LockerService,
    directory: UserDirectory,
    settings: Settings,
    *,
    broker_connected: Callable[[], bool] | None = None,
    broker_detail: Callable[[], str] | None = None,
    mqtt_metrics: MqttMetricsProvider | None = None,
    hook_metrics: HookMetrics | None = None,
    sync_credentials: bool = True,
    credentials_interval: float = 1.0,
    stream_poll_interval: float = 0.25,
    stream_keepalive: float = 15.0,
    run_mode: RunMode = RunMode.HEADLESS,
    connect_refusals: Callable[[], Mapping[str, int]] | None = None,
) -> web.Application:
    """The aiohttp application with every route of the backend.

    Raises ``SettingsError`` (naming ``MOSQ_SECRET``) when the hook has no
    secret: it never runs open. ``broker_connected``/``broker_detail`` and
    ``mqtt_metrics`` are the MQTT runtime's, when there is one.
    """
    hook_metrics = hook_metrics or HookMetrics()
    # No middleware: every route's handler answers its failures in the JSON error shape
    # itself (`json_errors`), and `add_unrouted` answers unknown paths and methods, so
    # aiohttp runs no middleware chain for any request (the hook's checks are the hot path).
    app = web.Application()
    hook_decisions: HookDecisions | None = None
    if not settings.dynsec:  # under dynsec Mosquitto decides alone: no hook, no MOSQ_SECRET
        hook_decisions = add_hook_routes(
            app,
            directory,
            settings.secret("mosq_secret"),
            legacy_status=lambda: settings.mqtt_accept_legacy_status,
            metrics=hook_metrics,
            lookup=StoreLookup(service.db, directory),
            previous_secret=_previous_secret(settings),
            on_error=error_answer,
        )
    monitor = HealthMonitor(
        service, broker_connected=broker_connected, broker_detail=broker_detail, run_mode=run_mode
    )
    stream = EventStream(
        service,
        poll_interval=stream_poll_interval,
        keepalive=stream_keepalive,
        max_streams=settings.sse_max_streams,
        max_per_token=settings.sse_max_streams_per_token,
    )
    latency = CommandLatency(service)
    metrics = MetricsEndpoint(
        service,
        monitor,
        hook_metrics=hook_metrics,
        mqtt_metrics=mqtt_metrics,
        latency=latency,
        open_streams=lambda: stream.open_streams,
        connect_refusals=connect_refusals or directory.refused_connects,
    )
    api = RestApi(service, monitor, stream)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(request.app[PARTS].openapi)

    endpoints: list[Endpoint] = [
        *api.endpoints(),
        Endpoint(
            "GET",
            "/healthz",
            "healthz",
            "Database and broker health (200 when both are fine, 503 otherwise)",
            monitor.healthz,
            response=HealthReport,
            extra_responses={503: "Something is down (same body)"},
        ),
        Endpoint(
            "GET",
            "/metrics",
            "metrics",
            "Prometheus metrics (text format 0.0.4)",
            metrics.handle,
            media_type="text/plain",
        ),
        Endpoint("GET", OPENAPI_PATH, "openapi", "This OpenAPI 3.1 document", openapi),
    ]
    register(app, endpoints, guard_for(service), json_errors)
    add_unrouted(app)  # last: it takes whatever no route above took
    document = build_openapi([*endpoints, *hook_endpoints()])
    app[PARTS] = AppParts(
        service=service,
        directory=directory,
        monitor=monitor,
        stream=stream,
        latency=latency,
        hook_metrics=hook_metrics,
        hook_decisions=hook_decisions,
        metrics=metrics,
        openapi=document,
        endpoints=tuple(endpoints),
    )

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        service.subscribe(latency.on_events)
        follower: asyncio.Task[None] | None = None
        if sync_credentials:
            sync = CredentialSync.of(directory)
            service.subscribe(sync.listener)
            follower = asyncio.create_task(
                follow_credentials(service, directory, credentials_interval),
                name="credential-follower",
            )
        try:
            yield
        finally:
            latency.closed = True  # the service keeps its listeners; make ours inert
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(stream.close)
    return app


class HttpServerError(RuntimeError):
    """The HTTP server could not start; the message names the setting to change."""


class HttpServer:
    """Serves one app on a TCP port, with the secret-redacting access log."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float = 5.0) -> None:
        self.app = app
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server (the bound port if 0 was asked)."""
        if self.host is None or self.port is None:
            raise RuntimeError("the HTTP server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; ``HttpServerError`` naming HTTP_PORT when it is taken."""
        if self._runner is not None:
            raise RuntimeError("the HTTP server is already running")
        runner = web.AppRunner(
            self.app,
            access_log_class=RedactingAccessLogger,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await start_site(
            runner,
            site,
            in_use=lambda: HttpServerError(
                f"HTTP_PORT {port} is already in use on {host}; "
                "stop the other process or set HTTP_PORT to a free port"
            ),
            cannot=lambda exc: HttpServerError(
                f"cannot listen on {host}:{port} (HTTP_HOST/HTTP_PORT): {exc.strerror or exc}"
            ),
        )
        self._runner = runner
        addresses = runner.addresses
        self.host = host
        self.port = int(addresses[0][1]) if addresses else port
        log.info("HTTP API listening on %s", self.url)

    async def stop(self) -> None:
        """Close the listener, end event streams, wait for requests in flight (bounded)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        log.info("HTTP API stopped")


def _previous_secret(settings: Settings) -> str | None:
    value = settings.mosq_secret_previous
    return value.get_secret_value() if value is not None else None
