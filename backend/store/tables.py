"""SQLModel tables of DESIGN section 8: events, read models, tracker, outbox, inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Column, Index, Integer, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from backend.store.types import UTCDateTime

BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


# The two column helpers return `Any`, as sqlmodel's `Field` does: the class attribute is
# declared with the Python type (`created_at: datetime = _ts()`), the value is a FieldInfo.
def _id() -> Any:
    return Field(default=None, sa_column=Column(BIG_ID, primary_key=True, autoincrement=True))


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a `table=True` model (for executemany and primary-key reads).
    SQLModel sets `__table__` when the class is created; its type stubs do not declare it."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]  # set at class creation


class StoredEvent(SQLModel, table=True):
    """The event store: one row per domain event; `id` is the global position."""

    __tablename__ = "stored_events"
    __table_args__ = (
        UniqueConstraint("aggregate_uuid", "aggregate_version", name="uq_stored_events_version"),
    )

    id: int | None = _id()
    aggregate_uuid: str = Field(max_length=36, index=True)
    aggregate_version: int
    event_type: str = Field(max_length=64)
    event_version: int = 1
    payload: str = Field(sa_column=Column(Text, nullable=False))
    event_metadata: str = Field(sa_column=Column("metadata", Text, nullable=False))
    created_at: datetime = _ts(nullable=False)


class LockerBankRow(SQLModel, table=True):
    """Read model: one row per bank."""

    __tablename__ = "locker_banks"

    uuid: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=100)
    location: str = Field(max_length=200)
    status: str = Field(max_length=16)  # a CommandStatus (backend.domain.command_status)
    heartbeat_interval_seconds: int
    desired_config_hash: str = Field(max_length=64)
    applied_config_hash: str | None = Field(default=None, max_length=128)
    config_state: str = Field(default="unknown", max_length=16)
    # effective dialect (auto until a registration decides), the operator's setting, and
    # what the registration suggested (DESIGN section 3.1)
    dialect: str = Field(default="seed", max_length=16)
    dialect_setting: str = Field(default="seed", max_length=16)
    detected_dialect: str | None = Field(default=None, max_length=16)
    token_hmac: str | None = Field(default=None, max_length=64, index=True)
    token_expires_at: datetime | None = _ts()
    password_sha256: str | None = Field(default=None, max_length=64)
    client_id: str | None = Field(default=None, max_length=128)
    provisioned_at: datetime | None = _ts()
    status_changed_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    version: int = 0


class CompartmentRow(SQLModel, table=True):
    """Read model: one row per compartment."""

    __tablename__ = "compartments"

    bank_uuid: str = Field(primary_key=True, max_length=36)
    number: int = Field(primary_key=True)
    slave_id: int
    address: int
    door_state: str = Field(default="unknown", max_length=16)
    last_opened_at: datetime | None = _ts()
    last_transaction_id: str | None = Field(default=None, max_length=128)
    open_transaction_id: str | None = Field(default=None, max_length=128)


class CommandTransactionRow(SQLModel, table=True):
    """Read model and inbox tracker of every command (DESIGN section 8).

    The event-derived columns are rebuilt from events; the tracker columns
    (`first_seen_at`, `last_seen_at`, `duplicate_count`, `payload_hash`,
    `attempts`) record what arrived on the wire and survive a rebuild.
    """

    __tablename__ = "command_transactions"
    __table_args__ = (Index("ix_command_transactions_status", "status", "expires_at"),)

    locker_uuid: str = Field(primary_key=True, max_length=36)
    transaction_id: str = Field(primary_key=True, max_length=128, index=True)
    action: str = Field(max_length=32)
    compartment_number: int | None = None
    status: str = Field(max_length=16)  # a CommandStatus (backend.domain.command_status)
    error_code: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=1024)
    requested_by: str = Field(max_length=128)
    requested_at: datetime = _ts(nullable=False, index=True)
    sent_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    expires_at: datetime = _ts(nullable=False)
    late: bool = False
    config_hash: str | None = Field(default=None, max_length=64)
    applied_config_hash: str | None = Field(default=None, max_length=128)
    payload_hash: str | None = Field(default=None, max_length=64)
    first_seen_at: datetime | None = _ts()
    last_seen_at: datetime | None = _ts()
    duplicate_count: int = 0
    attempts: int = 0
    in_doubt: bool = False
    """Tracker: sent and unanswered when this backend (re)started, to a device that never
    re-sends an answer; unanswered at expiry it ends `unknown`."""
    requested_from: str | None = Field(default=None, max_length=200)
    """Where the request came from (SSH client address, HTTP peer), for attribution."""


class BankLivenessRow(SQLModel, table=True):
    """Liveness, not event-derived: last heartbeat and uptime (a rebuild leaves it alone)."""

    __tablename__ = "bank_liveness"

    bank_uuid: str = Field(primary_key=True, max_length=36)
    last_heartbeat_at: datetime | None = _ts()
    device_timestamp: datetime | None = _ts()
    uptime_seconds: float | None = None
    heartbeats: int = 0
    clock_offset_seconds: float | None = None
    """Estimated device clock minus ours (heartbeat timestamps; smoothed minimum)."""


class OutboxRow(SQLModel, table=True):
    """Messages to publish, written in the transaction of the event that causes them."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_id", "status", "id"),
        Index("ix_outbox_bank_transaction", "bank_uuid", "transaction_id"),
    )

    id: int | None = _id()
    kind: str = Field(max_length=32)
    topic: str = Field(max_length=512)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    qos: int = 1
    retain: bool = False
    bank_uuid: str | None = Field(default=None, max_length=36)
    transaction_id: str | None = Field(default=None, max_length=128)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    created_at: datetime = _ts(nullable=False)
    available_at: datetime | None = _ts()
    expires_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=512)


class ProcessedMessageRow(SQLModel, table=True):
    """Dedup of device `event_id` / `message_id`, pruned after a TTL."""

    __tablename__ = "processed_messages"

    bank_uuid: str = Field(primary_key=True, max_length=36)
    message_key: str = Field(primary_key=True, max_length=128)
    processed_at: datetime = _ts(nullable=False, index=True)


class RejectedMessageRow(SQLModel, table=True):
    """Inbound messages refused by validation: topic, first 2 KiB, reason."""

    __tablename__ = "rejected_messages"

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=512)
    payload_head: str = Field(sa_column=Column(Text, nullable=False))
    reason: str = Field(max_length=512)
    received_at: datetime = _ts(nullable=False, index=True)


class ApiTokenRow(SQLModel, table=True):
    """Bearer tokens of the REST API, stored as SHA-256."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=16)
    token_sha256: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = _ts()


class AlertRow(SQLModel, table=True):
    """Read model of alerts (DESIGN section 7), derived from the events alone.

    `id` is the position of the event that opened the alert. Transaction alerts (late
    execution, command failed/expired, outcome unknown) stay open until acknowledged. A
    `bank_offline` alert opens at the first `LockerBankWentOffline`, counts every further
    one (`count`), and resolves once the bank has been online for 60 s: `resolves_at` is
    set when it comes back online and cleared when it goes offline again, so whether it is
    resolved depends only on the events and the time of asking.
    """

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_bank_kind", "bank_uuid", "kind"),)

    id: int = Field(sa_column=Column(BIG_ID, primary_key=True, autoincrement=False))
    kind: str = Field(max_length=32)
    bank_uuid: str = Field(max_length=36)
    transaction_id: str | None = Field(default=None, max_length=128)
    detail: str = Field(default="", max_length=512)
    count: int = 1
    opened_at: datetime = _ts(nullable=False)
    last_at: datetime = _ts(nullable=False)
    resolves_at: datetime | None = _ts(index=True)
    resolved_at: datetime | None = _ts()
    acknowledged_at: datetime | None = _ts()
    acknowledged_by: str | None = Field(default=None, max_length=128)
    ack_note: str | None = Field(default=None, max_length=500)


READ_MODEL_TABLES = ("locker_banks", "compartments", "command_transactions", "alerts")
