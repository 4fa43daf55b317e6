"""Settings from the environment (and `.env`), DESIGN section 12.

`load_settings()` validates everything at start and turns a bad value into one
clear line naming the variable (`SettingsError`). Secrets: with the embedded
broker (no MQTT_HOST) every missing one is generated once and kept in
LOCKER_DATA_DIR/secrets.json (mode 0600); with an external broker a missing
secret is an error naming the variable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.domain.topics import SERVER_STATUS

SECRET_FIELDS = (
    "mosq_secret",
    "secret_key",
    "mqtt_password",
    "mqtt_provisioning_password",
    "dynsec_admin_password",
)
SECRETS_FILE = "secrets.json"
DEFAULT_CONFIG_TTL = 3600.0
log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A configuration problem, phrased for the operator."""


class Settings(BaseSettings):
    """Every variable of DESIGN section 12."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    mqtt_host: str | None = None
    mqtt_port: int = Field(default=1883, ge=0, le=65535)
    mqtt_user: str = "locker_backend"
    mqtt_password: SecretStr | None = None
    mqtt_client_id: str = "locker-backend"
    mqtt_last_will_topic: str = SERVER_STATUS
    mqtt_last_will_message: str = '{"status": "offline"}'
    mqtt_provisioning_user: str = "provisioning_client"
    mqtt_provisioning_password: SecretStr | None = None
    mqtt_shared_group: str | None = None
    mqtt_superusers: str = ""
    mqtt_accept_legacy_status: bool = True
    mosq_secret: SecretStr | None = None
    mosq_secret_previous: SecretStr | None = None
    """Also accepted by the hook while MOSQ_SECRET is being rotated (deploy/README.md)."""
    locker_data_dir: Path = Path("./data")
    database_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    hook_host: str = "127.0.0.1"
    hook_port: int = Field(default=8081, ge=0, le=65535)
    mqtt_instance_id: str = Field(default_factory=lambda: default_instance_id())
    secret_key: SecretStr | None = None
    command_timeout: float = Field(default=30.0, gt=0)
    command_ttl: float | None = Field(default=None, gt=0)
    """Old name of CONFIG_TTL: its fallback only (never the TTL of an open), with a warning."""
    open_ttl: float | None = Field(default=None, gt=0)
    """Seconds an `open_compartment` may still execute; default (and maximum) COMMAND_TIMEOUT."""
    config_ttl: float | None = Field(default=None, gt=0)
    """Seconds an `apply_config` may still execute (idempotent; default 3600)."""
    command_retry_after: float = Field(default=10.0, gt=0)
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = "auto"
    """MQTT version the backend speaks: `auto` = 5 to an external broker, 3.1.1 to amqtt."""
    alert_webhook_url: str | None = None
    provisioning_token_ttl: float = Field(default=7 * 24 * 3600.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    mqtt_probe_interval: float = Field(default=5.0, gt=0)
    """Seconds between self-probes on `server/probe/{instance}` (DESIGN section 4)."""
    mqtt_probe_timeout: float = Field(default=5.0, gt=0)
    """A probe not back within this many seconds means the session no longer receives."""
    mqtt_max_packet_size: int = Field(default=131072, ge=1024)
    mqtt_connect_timeout: float = Field(default=10.0, gt=0)
    mqtt_max_connections_per_address: int = Field(default=0, ge=0)
    mqtt_registrations_per_address: int = Field(default=20, ge=0)
    """Embedded broker: registrations per minute per source address (0 = no limit)."""
    sse_max_streams: int = Field(default=200, ge=1)
    sse_max_streams_per_token: int = Field(default=10, ge=1)
    provisioning_failures_per_minute: int = Field(default=60, ge=1)
    """Failed registrations answered per minute, all clients together."""
    # Mosquitto's dynamic-security plugin (AUTH_MODE=dynsec, DESIGN 5.1; backend/dynsec/)
    auth_mode: Literal["hook", "dynsec"] = "hook"
    locker_broker: Literal["amqtt", "mosquitto"] = "amqtt"
    dynsec_admin_user: str = "locker_dynsec_admin"
    dynsec_admin_password: SecretStr | None = None

    @field_validator("mqtt_instance_id", mode="before")
    @classmethod
    def _instance_id(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return default_instance_id()
        if isinstance(value, str) and (
            any(c in value for c in "/+#\x00") or len(value) > 64 or not value.isprintable()
        ):
            raise ValueError("must be one MQTT topic level: no / + # or control characters")
        return value

    @field_validator(
        "mqtt_host", "mqtt_shared_group", "database_url", "alert_webhook_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def embedded_broker(self) -> bool:
        return self.mqtt_host is None

    @property
    def open_ttl_seconds(self) -> float:
        """TTL of an open: it expires when it times out (DESIGN section 9)."""
        return self.open_ttl if self.open_ttl is not None else self.command_timeout

    @property
    def config_ttl_seconds(self) -> float:
        """TTL of an `apply_config`: CONFIG_TTL, else the old COMMAND_TTL, else 3600."""
        if self.config_ttl is not None:
            return self.config_ttl
        if self.command_ttl is not None:
            return self.command_ttl
        return DEFAULT_CONFIG_TTL

    @property
    def mqtt_v5(self) -> bool:
        """Speak MQTT 5 (Message Expiry Interval on every publish): to an external broker
        unless MQTT_PROTOCOL says 3.1.1; never to the embedded amqtt broker (3.1.1 only)."""
        if self.mqtt_shared_group is not None or self.mqtt_protocol == "5":
            return True
        if self.mqtt_protocol == "3.1.1":
            return False
        return self.mqtt_host is not None

    @property
    def dynsec(self) -> bool:
        """Mosquitto's dynamic-security plugin decides: `AUTH_MODE=dynsec`, or the embedded
        broker is a private Mosquitto (`LOCKER_BROKER=mosquitto`), which always runs it."""
        return self.auth_mode == "dynsec" or (
            self.embedded_broker and self.locker_broker == "mosquitto"
        )

    @property
    def backend_client_id(self) -> str:
        """The backend's MQTT client id. Under dynsec the broker cannot refuse a CONNECT
        that takes over another client's id (DESIGN 5.1), so the reserved id gets a
        suffix nobody can guess without the backend's password: stable across restarts
        (the persistent session), the same for every process holding that password."""
        if not self.dynsec or self.mqtt_password is None:
            return self.mqtt_client_id
        key = self.mqtt_password.get_secret_value().encode()
        suffix = hmac.new(key, b"locker-console client id", hashlib.sha256).hexdigest()[:20]
        return f"{self.mqtt_client_id}-{suffix}"

    @property
    def superusers(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.mqtt_superusers.split(",") if u.strip())

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.locker_data_dir / 'locker.db').resolve()}"

    def secret(self, name: str) -> str:
        """The value of a secret field; SettingsError naming the variable if it is missing."""
        value = getattr(self, name)
        if value is None or not value.get_secret_value():
            raise SettingsError(f"{name.upper()} is not set (required with MQTT_HOST set)")
        return str(value.get_secret_value())


def default_instance_id() -> str:
    """Host name plus a short hash of the process id: distinct per process on one host,
    stable for the life of the process (suffix of status/probe topics, DESIGN 4, 12)."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_.")[:40] or "host"
    return f"{host}-{hashlib.sha256(str(os.getpid()).encode()).hexdigest()[:6]}"


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = str(first["loc"][0]).upper() if first.get("loc") else "setting"
    return f"{name}: {first.get('msg', 'invalid value')}"


FILE_SECRET_FIELDS = (*SECRET_FIELDS, "dynsec_admin_password")
"""Secrets that may also come from a file named by `{NAME}_FILE` (never a command line)."""


def secrets_from_files(overrides: dict[str, object]) -> dict[str, object]:
    """`{NAME}_FILE` variables: the secret is the file's content (one trailing newline
    dropped). Setting both `NAME` and `NAME_FILE` is an error, as is an unreadable file."""
    values: dict[str, object] = {}
    for name in FILE_SECRET_FIELDS:
        var = f"{name.upper()}_FILE"
        path = os.environ.get(var, "").strip()
        if not path or name in overrides:
            continue
        if os.environ.get(name.upper()):
            raise SettingsError(f"{name.upper()} and {var} are both set; set one of them")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SettingsError(f"{var}: cannot read {path}: {why}") from None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text.strip():
            raise SettingsError(f"{var}: {path} is empty")
        values[name] = text
    return values


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings (secrets also from `*_FILE` files), then fill
    generated secrets where allowed."""
    overrides = {**secrets_from_files(overrides), **overrides}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    check_command_lifetimes(settings)
    amqtt = settings.embedded_broker and settings.locker_broker == "amqtt"
    if settings.auth_mode == "dynsec" and amqtt:
        raise SettingsError(
            "AUTH_MODE=dynsec needs Mosquitto: set MQTT_HOST to your Mosquitto, or "
            "LOCKER_BROKER=mosquitto (--embedded-broker mosquitto) for the embedded one"
        )
    if settings.embedded_broker:
        settings = _with_generated_secrets(settings)
    return settings


def check_command_lifetimes(settings: Settings) -> None:
    """OPEN_TTL above COMMAND_TIMEOUT is refused (an open the console reports as failed
    could still execute); COMMAND_TTL alone is taken as CONFIG_TTL, with a warning."""
    if settings.open_ttl is not None and settings.open_ttl > settings.command_timeout:
        raise SettingsError(
            f"OPEN_TTL ({settings.open_ttl:g} s) must not exceed COMMAND_TIMEOUT "
            f"({settings.command_timeout:g} s): an open reported as failed must never execute"
        )
    if settings.command_ttl is not None and settings.config_ttl is None:
        log.warning(
            "COMMAND_TTL is deprecated: taken as CONFIG_TTL (%g s) for apply_config only; "
            "opens expire after OPEN_TTL (%g s). Set CONFIG_TTL instead.",
            settings.command_ttl,
            settings.open_ttl_seconds,
        )


def _with_generated_secrets(settings: Settings) -> Settings:
    missing = [name for name in SECRET_FIELDS if getattr(settings, name) is None]
    if not missing:
        return settings
    path = settings.locker_data_dir / SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            raise SettingsError(f"{path} is not valid JSON; remove it to regenerate") from None
    changed = False
    for name in missing:
        if name not in stored:
            stored[name] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        settings.locker_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle)
        os.replace(tmp, path)
    values = {name: SecretStr(stored[name]) for name in missing}
    return settings.model_copy(update=values)
