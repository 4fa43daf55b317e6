"""Build the amqtt 0.12.x broker configuration for the embedded broker.

Shape checked against amqtt 0.12.1 (`amqtt.contexts.BrokerConfig`, loaded with dacite
`strict=True`): `listeners` is a dict of listener configs with a `default` entry; `plugins`
is a dict from a plugin's dotted class path to its `Config` fields. Giving `plugins`
replaces amqtt's defaults, so there is no `AnonymousAuthPlugin` and anonymous access is off:
every CONNECT goes to our hook, which refuses a missing username.

The HTTP plugins' `Config` dataclasses are hydrated with dacite `strict=True` and no type
casting, so `request_method`, `params_mode` and `response_mode` must be the enums, not strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from amqtt.contrib.http import ParamsMode, RequestMethod, ResponseMode

USER_AUTH_PLUGIN = "amqtt.contrib.http.UserAuthHttpPlugin"
TOPIC_AUTH_PLUGIN = "amqtt.contrib.http.TopicAuthHttpPlugin"
MONITOR_PLUGIN = "backend.broker.monitor.ClientMonitorPlugin"
SESSION_STORE_PLUGIN = "backend.broker.persistence.SessionStore"

AUTH_PATH = "/api/mosq/auth"
ACL_PATH = "/api/mosq/acl"
LISTENER_NAME = "default"


@dataclass(frozen=True)
class HookEndpoint:
    """Where the auth hook listens, split as amqtt's HTTP plugins want it."""

    host: str
    port: int
    with_tls: bool
    base_path: str

    @classmethod
    def parse(cls, hook_url: str) -> HookEndpoint:
        """Split a base URL such as `http://127.0.0.1:8080` (an optional path prefix is kept)."""
        parts = urlsplit(hook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hook_url must be an http(s) base URL, got {hook_url!r}")
        if parts.query or parts.fragment:
            raise ValueError("hook_url must not carry a query or fragment")
        with_tls = parts.scheme == "https"
        port = parts.port or (443 if with_tls else 80)
        return cls(parts.hostname, port, with_tls, parts.path.rstrip("/"))

    def uri(self, path: str, secret: str) -> str:
        """The request URI (path and query) of one hook endpoint, carrying the secret."""
        return f"{self.base_path}{path}?mosq_secret={quote(secret, safe='')}"


def bind_address(host: str, port: int) -> str:
    """amqtt's `bind` value: `host:port`, IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sqlite_url(db_file: Path) -> str:
    """The async SQLAlchemy URL amqtt's session store wants for a SQLite file."""
    return f"sqlite+aiosqlite:///{db_file}"


def build_broker_config(
    *,
    host: str,
    port: int,
    hook_url: str | None,
    mosq_secret: str,
    db_file: Path | None,
    hook_timeout: int = 5,
) -> dict[str, Any]:
    """The full amqtt config dict: one TCP listener, HTTP auth + ACL (unless `hook_url` is
    None: the broker then decides in process, `backend/broker/in_process_auth.py`), monitor,
    optional store."""
    plugins: dict[str, Any] = {}
    if hook_url is not None:
        plugins.update(_http_plugins(hook_url, mosq_secret, hook_timeout))
    plugins[MONITOR_PLUGIN] = {}
    if db_file is not None:
        plugins[SESSION_STORE_PLUGIN] = {
            "connection": sqlite_url(db_file),
            "clear_on_shutdown": False,
        }
    return {
        "listeners": {
            LISTENER_NAME: {"type": "tcp", "bind": bind_address(host, port)},
        },
        "timeout_disconnect_delay": 0,
        "plugins": plugins,
    }


def _http_plugins(hook_url: str, mosq_secret: str, hook_timeout: int) -> dict[str, Any]:
    """amqtt's HTTP auth and topic plugins, asking the hook at `hook_url`."""
    hook = HookEndpoint.parse(hook_url)
    http_common: dict[str, Any] = {
        "host": hook.host,
        "port": hook.port,
        "with_tls": hook.with_tls,
        "request_method": RequestMethod.POST,
        "params_mode": ParamsMode.JSON,
        "response_mode": ResponseMode.STATUS,
        "user_agent": "locker-console-embedded-broker",
        "timeout": hook_timeout,
    }
    return {
        USER_AUTH_PLUGIN: {**http_common, "user_uri": hook.uri(AUTH_PATH, mosq_secret)},
        TOPIC_AUTH_PLUGIN: {**http_common, "topic_uri": hook.uri(ACL_PATH, mosq_secret)},
    }
