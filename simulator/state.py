"""What a device remembers across restarts, and the file it keeps it in.

One small JSON file per device (`state.json` in the device's state directory):
its provisioning client id, its credentials, the applied configuration, the
commands in flight and the responses already given (the dedup cache). Every
save writes a temporary file and renames it over the old one (`os.replace`),
so a crash leaves either the old or the new state, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.domain.contract import CompartmentMapping, Credentials

STATE_FILE = "state.json"
STATE_VERSION = 1
MAX_RESPONSES = 512
"""The dedup cache keeps at most this many answered transactions."""
RESPONSE_RETENTION = timedelta(hours=1)
"""Answered transactions whose command expired longer ago than this are forgotten
first: the backend never asks again after `expires_at`."""


class StateError(RuntimeError):
    """The state file exists but cannot be read; the device refuses to guess."""


class InFlight(BaseModel):
    """A command whose hardware action may have started but whose response is not stored."""

    model_config = ConfigDict(frozen=True)

    action: str
    started_at: datetime
    expires_at: datetime


class StoredResponse(BaseModel):
    """The exact response bytes given for a transaction, re-sent on duplicates."""

    model_config = ConfigDict(frozen=True)

    payload: str
    expires_at: datetime
    stored_at: datetime


class AppliedConfig(BaseModel):
    """The configuration the device applied last (from `apply_config`)."""

    model_config = ConfigDict(frozen=True)

    heartbeat_interval_seconds: int
    compartments: list[CompartmentMapping]
    config_hash: str


class DeviceState(BaseModel):
    """Everything a device persists."""

    version: int = STATE_VERSION
    client_id: str = Field(default_factory=lambda: new_client_id())
    credentials: Credentials | None = None
    config: AppliedConfig | None = None
    in_flight: dict[str, InFlight] = Field(default_factory=dict)
    responses: dict[str, StoredResponse] = Field(default_factory=dict)

    def prune(self, now: datetime, keep: int = MAX_RESPONSES) -> None:
        """Forget transactions long past expiry, then the oldest answers beyond `keep`."""
        horizon = now - RESPONSE_RETENTION
        for tx in [tx for tx, r in self.responses.items() if r.expires_at < horizon]:
            del self.responses[tx]
        for tx in [tx for tx, f in self.in_flight.items() if f.expires_at < horizon]:
            del self.in_flight[tx]
        excess = len(self.responses) - keep
        if excess > 0:
            # dicts keep insertion order: the first entries are the oldest answers
            for tx in list(self.responses)[:excess]:
                del self.responses[tx]


def new_client_id() -> str:
    """A random provisioning client id (MQTT-safe: no '/', '+', '#')."""
    return "locker-" + secrets.token_hex(8)


class StateStore:
    """Loads and atomically saves one device's `DeviceState`.

    durable=True also fsyncs the file and its directory, as a real device
    would to survive power loss; benchmarks may turn it off.
    """

    def __init__(self, directory: Path | str, *, durable: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.durable = durable
        self.saves = 0

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> DeviceState:
        """The saved state, or a fresh one (new random client id) saved at once."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            state = DeviceState()
            self.save(state)
            return state
        try:
            state = DeviceState.model_validate_json(raw)
        except ValidationError as exc:
            msg = f"{self.path}: unreadable device state ({exc.error_count()} errors)"
            raise StateError(msg) from None
        if state.version != STATE_VERSION:
            raise StateError(f"{self.path}: state version {state.version} is not {STATE_VERSION}")
        return state

    def save(self, state: DeviceState) -> None:
        """Write the whole state to a temporary file and rename it into place."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = state.model_dump_json().encode()
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        # the device's MQTT password is in here: owner only (issue 14)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(data)
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        if self.durable:
            with contextlib.suppress(OSError):
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.saves += 1
