"""Read-model views: the plain data the CLI, HTTP API and TUI show (stable JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_serializer

from backend.domain.command_status import TERMINAL_STATUSES, CommandStatus
from backend.domain.timeutil import iso


class View(BaseModel):
    """Base: frozen, timestamps as ISO 8601 UTC in JSON."""

    model_config = ConfigDict(frozen=True)

    @field_serializer("*", when_used="json")
    def _ser(self, value: Any) -> Any:
        return iso(value) if isinstance(value, datetime) else value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CompartmentView(View):
    number: int
    slave_id: int
    address: int
    door_state: str
    last_opened_at: datetime | None = None
    open_transaction_id: str | None = None


class BankView(View):
    uuid: str
    name: str
    location: str
    status: str
    heartbeat_interval_seconds: int
    last_heartbeat_at: datetime | None = None
    uptime_seconds: float | None = None
    clock_offset_seconds: float | None = None
    """The device's clock minus ours, estimated from its heartbeats."""
    clock_skewed: bool = False
    """Off by more than 5 s (a seed device judges `expires_at` by its own clock)."""
    config_state: str
    desired_config_hash: str
    applied_config_hash: str | None = None
    dialect: str = "seed"  # seed | openlocker | auto (until the registration decides)
    dialect_setting: str = "seed"  # what the operator chose: auto | seed | openlocker
    token_expires_at: datetime | None = None
    provisioned_at: datetime | None = None
    status_changed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    pending_commands: int = 0
    compartments: list[CompartmentView] = []

    @property
    def open_compartments(self) -> int:
        return sum(1 for c in self.compartments if c.door_state == "open")


class CreatedBank(View):
    uuid: str
    name: str
    location: str
    token: str
    token_expires_at: datetime
    compartments: int
    heartbeat_interval_seconds: int
    dialect: str = "auto"


class IssuedToken(View):
    uuid: str
    token: str
    token_expires_at: datetime


class TransactionView(View):
    transaction_id: str
    bank_uuid: str
    action: str
    compartment_number: int | None = None
    status: CommandStatus
    error_code: str | None = None
    message: str | None = None
    requested_by: str
    requested_from: str | None = None
    """Where the request came from (e.g. `ssh from 203.0.113.7`, `HTTP peer 10.0.0.5`)."""
    requested_at: datetime
    sent_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime
    late: bool = False
    duplicate_count: int = 0
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    config_hash: str | None = None
    applied_config_hash: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def latency_seconds(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.requested_at).total_seconds()


class AlertView(View):
    """One alert (DESIGN section 7); `state` is `open` or `resolved` at the time of asking."""

    id: int
    kind: str
    bank_uuid: str
    bank_name: str = ""
    transaction_id: str | None = None
    detail: str
    count: int = 1
    opened_at: datetime
    last_at: datetime
    state: str
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_note: str | None = None

    @property
    def label(self) -> str:
        return self.kind.replace("_", " ")


class EventView(View):
    position: int
    event_type: str
    aggregate_uuid: str
    aggregate_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime


class HeartbeatSample(View):
    """One heartbeat as this backend received it: when, and how late (arrival minus the
    device's own timestamp; negative when the device's clock is ahead)."""

    received_at: datetime
    lag_seconds: float


class RejectedView(View):
    id: int
    topic: str
    payload_head: str
    reason: str
    received_at: datetime
