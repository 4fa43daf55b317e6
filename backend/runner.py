"""The backend services in one process: what `--headless` runs, and what the standalone
console runs beside its TUI.

Start order: store (migrated) -> HTTP (auth hook, API, health, metrics) -> embedded broker
when MQTT_HOST is unset (it asks the hook) -> MQTT runtime. Stop in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

from backend.alert_notifier import AlertNotifier
from backend.broker import BrokerStartError, EmbeddedBroker
from backend.broker.limits import Limits
from backend.broker.mosquitto import MosquittoChild
from backend.config import Settings
from backend.domain.timeutil import Clock
from backend.file_modes import sqlite_files, tighten
from backend.gc_tuning import tune_gc
from backend.http.credentials import load_directory
from backend.http.server import PARTS, HttpServer, HttpServerError, build_app
from backend.lifecycle import StartStop
from backend.mqtt.runtime import MqttRuntime, RuntimeOptions
from backend.run_mode import RunMode
from backend.service import LockerService

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A service could not start; the message is one line for the operator."""


def port_free(host: str, port: int) -> bool:
    """Whether the broker can bind the port now. With SO_REUSEADDR, as the broker's own
    listener binds (socket.create_server): connections the previous run closed linger in
    TIME_WAIT for a minute and must not stop a restart while devices are connected."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class BackendServices(StartStop):
    """Store, HTTP server, optional embedded broker and MQTT runtime, started together."""

    settings: Settings
    clock: Clock | None = None
    runtime_options: RuntimeOptions | None = None
    run_mode: RunMode = RunMode.HEADLESS
    tune_gc: bool = False
    """The process is this backend (the CLI entry points): tune the garbage collector
    (`backend/gc_tuning.py`) once started. Tests sharing one process leave it alone."""

    def __post_init__(self) -> None:
        self.service = LockerService(self.settings, clock=self.clock)
        self.runtime = MqttRuntime(self.service, self.runtime_options)
        self.http: HttpServer | None = None
        self.broker: EmbeddedBroker | None = None
        self.notifier: AlertNotifier | None = None
        self.mosquitto: MosquittoChild | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except (BrokerStartError, HttpServerError) as exc:
            await self.stop()
            raise StartupError(str(exc)) from None
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        # The secrets the services need, checked before anything starts: with an external
        # broker a missing one is an error naming the variable (DESIGN section 12). Without
        # SECRET_KEY every registration would fail later, the device left without a reply.
        for name in ("secret_key", "mqtt_password"):
            settings.secret(name)
        amqtt = settings.embedded_broker and settings.locker_broker == "amqtt"
        if amqtt and not port_free("127.0.0.1", settings.mqtt_port):  # (Mosquitto: its own)
            raise BrokerStartError(
                f"MQTT port {settings.mqtt_port} on 127.0.0.1 is already in use; set MQTT_HOST "
                "to use an external broker or MQTT_PORT to pick another port"
            )
        # what an older version (or another umask) left readable to others: owner only
        tighten(settings.locker_data_dir, sqlite_files(settings.db_url))
        await self.service.migrate()
        directory = await load_directory(self.service, settings)
        state = self.runtime.state
        probe = self.runtime.connection.probe
        app = build_app(
            self.service,
            directory,
            settings,
            # the broker path works: connected, and our session still receives (self-probe)
            broker_connected=lambda: state.connected and probe.problem() is None,
            broker_detail=lambda: probe.problem() or state.last_error or "",
            mqtt_metrics=self.runtime.metrics.snapshot,
            run_mode=self.run_mode,
            connect_refusals=lambda: self._connect_refusals(directory.refused_connects()),
        )
        self.http = HttpServer(app)
        await self.http.start(settings.http_host, settings.http_port)
        if settings.embedded_broker and settings.locker_broker == "mosquitto":
            self.mosquitto = MosquittoChild(
                data_dir=settings.locker_data_dir,
                port=settings.mqtt_port,
                admin_user=settings.dynsec_admin_user,
                admin_password=settings.secret("dynsec_admin_password"),
            )
            await self.mosquitto.start()
        elif settings.embedded_broker:
            decisions = app[PARTS].hook_decisions
            assert decisions is not None  # the hook is served whenever dynsec is off
            self.broker = EmbeddedBroker(
                host="127.0.0.1",
                port=settings.mqtt_port,
                decisions=decisions,  # the hook's own decisions, asked in process
                data_dir=settings.locker_data_dir,
                limits=Limits(
                    max_packet_size=settings.mqtt_max_packet_size,
                    connect_timeout=settings.mqtt_connect_timeout,
                    max_connections_per_address=settings.mqtt_max_connections_per_address,
                    registrations_per_address=settings.mqtt_registrations_per_address,
                ),
            )
            await self.broker.start()
            log.info("embedded MQTT broker on 127.0.0.1:%d", self.broker.port)
        # dynsec: the backend's own account must exist before the runtime logs in
        await self.service.accounts.start(self.service)
        if self.tune_gc:
            tune_gc()
        if settings.alert_webhook_url:
            self.notifier = AlertNotifier(self.service, settings.alert_webhook_url)
            await self.notifier.start()
        await self.runtime.start()

    def _connect_refusals(self, by_hook: dict[str, int]) -> dict[str, int]:
        """Refused CONNECTs: the hook's reasons plus the embedded broker's limits."""
        if self.broker is not None:
            by_hook.update(self.broker.refused_connections())
        return by_hook

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.runtime.stop()
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                await self.notifier.stop()
        with contextlib.suppress(Exception):
            await self.service.accounts.close()
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()
        if self.mosquitto is not None:
            with contextlib.suppress(Exception):
                await self.mosquitto.stop()
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.stop()
        self.service.close()


async def run_headless(settings: Settings) -> None:
    """Run the services until cancelled (SIGINT/SIGTERM)."""
    services = BackendServices(settings, tune_gc=True)
    await services.start()
    log.info(
        "locker-console backend running (HTTP %s, MQTT %s:%d)",
        services.http.url if services.http else "-",
        settings.mqtt_host or f"127.0.0.1 (embedded {settings.locker_broker})",
        settings.mqtt_port,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await services.stop()
