"""The embedded MQTT broker: amqtt in-process, every decision the auth hook's.

Used when `MQTT_HOST` is unset (DESIGN sections 1 and 12). Authentication and the ACL are
the hook's decisions (DESIGN section 5), asked one of two ways:

* `decisions=` (the backend, `backend/runner.py`): the hook's `HookDecisions` awaited in
  process (`backend/broker/in_process_auth.py`), the same code the HTTP hook runs, without
  an HTTP request to ourselves per check;
* `hook_url=` (a hook elsewhere; the broker tests): through amqtt's own HTTP plugins,
  `POST {hook_url}/api/mosq/auth` and `/api/mosq/acl`, JSON bodies, allowed on any 2xx,
  each URL carrying `?mosq_secret=...`.

Anonymous access is off. The broker class itself is
`SecureBroker` (closing amqtt 0.12.1's authorization holes, see its docstring), as
`SessionAwareBroker` (a resumed session without subscriptions is reported as new), in
`HardenedBroker` (connection limits, PUBACKed messages never dropped, identity changes).

    async with EmbeddedBroker(port=0, hook_url="http://127.0.0.1:8080",
                              mosq_secret=secret, data_dir=Path("data")) as broker:
        print(broker.port)
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

from amqtt.session import Session

from backend.broker.config import HookEndpoint, build_broker_config
from backend.broker.errors import BrokerStartError, port_in_use_message
from backend.broker.hardened import HardenedBroker
from backend.broker.in_process_auth import Decisions
from backend.broker.limits import Limits
from backend.broker.monitor import ClientMonitorPlugin
from backend.lifecycle import StartStop
from backend.redaction import install_redaction, redact

log = logging.getLogger(__name__)

PERSISTENCE_MODULES = ("aiosqlite", "greenlet")
DB_FILENAME = "broker.sqlite3"


class EmbeddedBroker(StartStop):
    """An amqtt MQTT 3.1.1 broker on `host:port`, authenticated by the hook's `decisions`
    (in process) or by the hook at `hook_url` (over HTTP).

    Sessions, queued messages and retained messages persist in SQLite under
    `data_dir/broker/` unless `persistence=False` (tests). `port=0` picks a free port;
    `port` reports the real one once started.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        hook_url: str | None = None,
        mosq_secret: str = "",
        data_dir: Path,
        persistence: bool = True,
        hook_timeout: float = 5.0,
        limits: Limits | None = None,
        decisions: Decisions | None = None,
    ) -> None:
        if decisions is None:
            if hook_url is None:
                raise ValueError("the embedded broker needs the hook: decisions or hook_url")
            if not mosq_secret:
                raise ValueError("the embedded broker needs the hook secret (MOSQ_SECRET)")
            HookEndpoint.parse(hook_url)  # fail early on a malformed URL
        elif hook_url is not None:
            raise ValueError("the embedded broker asks the hook one way: decisions or hook_url")
        self._decisions = decisions
        self._host = host
        self._port = port
        self._hook_url = hook_url
        self._secret = mosq_secret
        self._data_dir = Path(data_dir)
        self._persistence = persistence
        self._hook_timeout = hook_timeout
        self._limits = limits or Limits()
        self._broker: HardenedBroker | None = None
        self._monitor: ClientMonitorPlugin | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port: the real one after `start()`, even when configured as 0."""
        return self._port

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def db_file(self) -> Path | None:
        """The SQLite file of sessions and retained messages, None without persistence."""
        return self._data_dir / "broker" / DB_FILENAME if self._persistence else None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start serving; raises BrokerStartError with one clear message."""
        if self._broker is not None:
            return
        db_file = self._prepare_persistence()
        sock = self._bind()
        try:
            port = int(sock.getsockname()[1])
            config = build_broker_config(
                host=self._host,
                port=port,
                hook_url=self._hook_url,
                mosq_secret=self._secret,
                db_file=db_file,
                hook_timeout=max(1, round(self._hook_timeout)),
            )
            try:
                broker = HardenedBroker(
                    config,
                    listen_socket=sock,
                    hook_timeout=self._hook_timeout,
                    limits=self._limits,
                    decisions=self._decisions,
                )
            except Exception as exc:
                raise BrokerStartError(
                    f"embedded MQTT broker configuration rejected: {redact(str(exc))}"
                ) from None
            install_redaction()
            _quiet_state_machine_logs()
            try:
                await broker.start()
            except Exception as exc:
                cause = exc.__cause__ or exc
                raise BrokerStartError(
                    f"embedded MQTT broker failed to start: {redact(str(cause))}"
                ) from None
        except BaseException:
            sock.close()  # no-op when the broker's server owns and closed it already
            raise
        self._broker = broker
        self._port = port
        monitor = broker.plugins_manager.get_plugin(ClientMonitorPlugin.__name__)
        assert isinstance(monitor, ClientMonitorPlugin)
        self._monitor = monitor
        log.info(
            "embedded MQTT broker listening on %s:%d (persistence %s)",
            self._host,
            self._port,
            "on" if db_file else "off",
        )

    async def stop(self) -> None:
        """Shut the broker down (retained and queued messages stay in the store)."""
        broker, self._broker, self._monitor = self._broker, None, None
        if broker is None:
            return
        await broker.shutdown()
        log.info("embedded MQTT broker stopped")

    # -- state, for health checks and tests ------------------------------------------------

    def _session(self, client_id: str) -> Session | None:
        if self._broker is None:
            return None
        return self._broker.sessions.get(client_id, (None, None))[0]

    def is_connected(self, client_id: str) -> bool:
        session = self._session(client_id)
        return session is not None and session.transitions.state == "connected"

    def has_session(self, client_id: str) -> bool:
        """True while the broker keeps a session for `client_id` (online or persistent)."""
        return self._session(client_id) is not None

    def connected_count(self) -> int:
        if self._broker is None:
            return 0
        return sum(
            1
            for session, _ in self._broker.sessions.values()
            if session.transitions.state == "connected"
        )

    def queued_count(self, client_id: str) -> int:
        """Messages waiting for the offline persistent session `client_id`."""
        session = self._session(client_id)
        return session.retained_messages.qsize() if session is not None else 0

    def refused_connections(self) -> dict[str, int]:
        """Connections refused below the hook (limits), by reason."""
        if self._broker is None:
            return {}
        return dict(self._broker.refused_connections)

    def retained_topics(self) -> frozenset[str]:
        if self._broker is None:
            return frozenset()
        return frozenset(self._broker.retained_messages)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Await `predicate()` becoming true, re-checked at each connect, disconnect or
        queued/retained message; raises TimeoutError after `timeout` seconds."""
        if self._monitor is None:
            raise RuntimeError("the embedded broker is not running")
        await self._monitor.wait_for(predicate, timeout)

    # -- helpers ------------------------------------------------------------------------

    def _prepare_persistence(self) -> Path | None:
        db_file = self.db_file
        if db_file is None:
            return None
        missing = [m for m in PERSISTENCE_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise BrokerStartError(
                "embedded MQTT broker persistence needs the Python packages "
                f"{', '.join(missing)} (install aiosqlite and SQLAlchemy[asyncio])"
            )
        try:
            db_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BrokerStartError(
                f"cannot create the broker state directory {db_file.parent}: {exc.strerror}"
            ) from None
        # amqtt's store swallows its own database errors at start: check the file first.
        try:
            with contextlib.closing(sqlite3.connect(db_file)) as db:
                db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:
            raise BrokerStartError(f"broker state file {db_file} is unusable: {exc}") from None
        return db_file

    def _bind(self) -> socket.socket:
        """Bind the listening socket ourselves: one clear error, and the real port for 0."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            sock = socket.create_server((self._host, self._port), family=family, backlog=1024)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerStartError(port_in_use_message(self._host, self._port)) from None
            raise BrokerStartError(
                f"cannot listen for MQTT on {self._host}:{self._port}: {exc.strerror or exc}"
            ) from None
        sock.setblocking(False)
        return sock


def _quiet_state_machine_logs() -> None:
    """amqtt's `transitions` dependency logs several INFO lines per MQTT connection; keep
    them out unless the application configured that logger itself."""
    machine_log = logging.getLogger("transitions")
    if machine_log.level == logging.NOTSET:
        machine_log.setLevel(logging.WARNING)
