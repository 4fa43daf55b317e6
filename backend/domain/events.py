"""Domain events of the LockerBank aggregate (DESIGN section 7), past tense, versioned."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator

from backend.domain.timeutil import ensure_utc, iso

BankStatus = Literal["unprovisioned", "provisioned", "online", "offline", "revoked"]
CommandAction = Literal["open_compartment", "apply_config", "update_firmware"]


class EventMetadata(BaseModel):
    """Who caused an event and how it relates to others."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None
    origin: str | None = None
    """Where the actor acted from (SSH client address, HTTP peer), see backend.attribution."""


class DomainEvent(BaseModel):
    """Base of every event; `occurred_at` is set by whoever records it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    occurred_at: datetime

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            # Millisecond precision, as on the wire, so a replay reproduces the same values.
            value = ensure_utc(value)
            return value.replace(microsecond=value.microsecond // 1000 * 1000)
        return value

    @field_serializer("*", when_used="json")
    def _ser(self, value: Any) -> Any:
        return iso(value) if isinstance(value, datetime) else value

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CompartmentSpec(BaseModel):
    """A compartment's number and its Modbus mapping."""

    model_config = ConfigDict(frozen=True)

    number: int
    slave_id: int
    address: int


class LockerBankCreated(DomainEvent):
    event_type: ClassVar[str] = "LockerBankCreated"
    name: str
    location: str
    heartbeat_interval_seconds: int
    compartments: list[CompartmentSpec]
    # auto | seed | openlocker. Banks created before dialects existed speak `seed`.
    dialect: str = "seed"


class LockerBankUpdated(DomainEvent):
    """The operator edited a bank; the full new settings (unchanged ones repeated)."""

    event_type: ClassVar[str] = "LockerBankUpdated"
    name: str
    location: str
    heartbeat_interval_seconds: int
    compartments: list[CompartmentSpec]
    dialect: str


class ProvisioningTokenIssued(DomainEvent):
    event_type: ClassVar[str] = "ProvisioningTokenIssued"
    token_hmac: str
    expires_at: datetime


class LockerBankProvisioned(DomainEvent):
    event_type: ClassVar[str] = "LockerBankProvisioned"
    client_id: str
    password_sha256: str
    # What the registration suggested (a `message_id` in it: openlocker); None before 3.1.
    dialect: str | None = None


class ProvisioningRejected(DomainEvent):
    event_type: ClassVar[str] = "ProvisioningRejected"
    client_id: str
    reason: str


class CredentialsRevoked(DomainEvent):
    event_type: ClassVar[str] = "CredentialsRevoked"
    reason: str = ""


class CompartmentOpeningRequested(DomainEvent):
    event_type: ClassVar[str] = "CompartmentOpeningRequested"
    transaction_id: str
    compartment_number: int
    requested_by: str
    expires_at: datetime


class ConfigApplyRequested(DomainEvent):
    event_type: ClassVar[str] = "ConfigApplyRequested"
    transaction_id: str
    requested_by: str
    expires_at: datetime
    config_hash: str
    heartbeat_interval_seconds: int
    compartments: list[CompartmentSpec]


class CommandSent(DomainEvent):
    """The broker acknowledged (PUBACK) the command's first publication."""

    event_type: ClassVar[str] = "CommandSent"
    transaction_id: str
    action: CommandAction


class CompartmentOpened(DomainEvent):
    event_type: ClassVar[str] = "CompartmentOpened"
    transaction_id: str
    compartment_number: int
    late: bool = False
    after_expiry: bool = False
    """The answer came after the command expired: a late execution (status `late`)."""
    message: str | None = None


class CommandFailed(DomainEvent):
    event_type: ClassVar[str] = "CommandFailed"
    transaction_id: str
    action: CommandAction
    error_code: str | None = None
    message: str | None = None
    late: bool = False
    after_expiry: bool = False


class CommandTimedOut(DomainEvent):
    event_type: ClassVar[str] = "CommandTimedOut"
    transaction_id: str
    action: CommandAction


class CommandExpired(DomainEvent):
    event_type: ClassVar[str] = "CommandExpired"
    transaction_id: str
    action: CommandAction
    outcome_unknown: bool = False
    """The device may have acted and its answer is lost for good (a dialect that cannot
    replay answers, and a crash that may have dropped one): status `unknown`."""


class ConfigApplied(DomainEvent):
    event_type: ClassVar[str] = "ConfigApplied"
    transaction_id: str
    applied_config_hash: str | None
    in_sync: bool
    late: bool = False
    after_expiry: bool = False
    message: str | None = None


class LockerBankWentOffline(DomainEvent):
    event_type: ClassVar[str] = "LockerBankWentOffline"
    reason: Literal["last_will", "heartbeat_timeout"]


class LockerBankCameOnline(DomainEvent):
    event_type: ClassVar[str] = "LockerBankCameOnline"


class DoorStateChanged(DomainEvent):
    event_type: ClassVar[str] = "DoorStateChanged"
    compartment_number: int
    state: Literal["open", "closed", "unknown"]
    event_id: str | None = None


class DeviceEventRecorded(DomainEvent):
    """A documented device event without a domain rule yet (e.g. `tamper_detected`)."""

    event_type: ClassVar[str] = "DeviceEventRecorded"
    event: str
    data: dict[str, Any] = {}
    event_id: str | None = None


class QrScanned(DomainEvent):
    event_type: ClassVar[str] = "QrScanned"
    qr_payload: str
    scanner: str
    event_id: str | None = None


class AlertAcknowledged(DomainEvent):
    """An operator has seen an alert of this bank (`alert_id`: see backend.domain.alerts)."""

    event_type: ClassVar[str] = "AlertAcknowledged"
    alert_id: int
    note: str = ""


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.event_type: cls
    for cls in (
        LockerBankCreated,
        LockerBankUpdated,
        ProvisioningTokenIssued,
        LockerBankProvisioned,
        ProvisioningRejected,
        CredentialsRevoked,
        CompartmentOpeningRequested,
        ConfigApplyRequested,
        CommandSent,
        CompartmentOpened,
        CommandFailed,
        CommandTimedOut,
        CommandExpired,
        ConfigApplied,
        LockerBankWentOffline,
        LockerBankCameOnline,
        DoorStateChanged,
        QrScanned,
        AlertAcknowledged,
        DeviceEventRecorded,
    )
}


def event_from_payload(event_type: str, payload: dict[str, Any]) -> DomainEvent:
    """Rebuild a typed event from its stored form."""
    try:
        cls = EVENT_TYPES[event_type]
    except KeyError:
        raise ValueError(f"unknown event type {event_type!r}") from None
    return cls.model_validate(payload)
