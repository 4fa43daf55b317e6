"""Domain events of the LockerBank aggregate (DESIGN section 7), past tense, versioned.

Every subclass of `DomainEvent` registers itself in `EVENT_TYPES` under its `event_type`
when the class is defined: a new event is one class here, its fold handler
(`LockerBank._on_<event_type>`, or listed in `bank.NOT_FOLDED`) and its projector
(`@projector` in `backend.store.projections`, or listed in `projections.NOT_PROJECTED`);
tests/unit/test_event_registry.py fails while one of them is missing.

Stored events carry their `event_version`. When a class's shape changes, raise its
`event_version` and register an upcaster for the old version (`@upcaster(name, old)`),
a pure function from the old payload to the next version's; `event_from_payload` runs the
chain on load, so every reader sees the current shape.
"""

from __future__ import annotations

from collections.abc import Callable
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


Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]
"""Turns a stored payload of one event version into the next version's."""

EVENT_TYPES: dict[str, type[DomainEvent]] = {}
"""Every event class by its stored name; filled by the classes themselves."""
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(event type, from version) -> the step to `from version + 1`."""


class DomainEvent(BaseModel):
    """Base of every event; `occurred_at` is set by whoever records it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    occurred_at: datetime

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must name its stored `event_type`")
        known = EVENT_TYPES.get(cls.event_type)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"event type {cls.event_type!r} is taken by {known.__qualname__}")
        EVENT_TYPES[cls.event_type] = cls

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


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the step that turns `event_type`'s payload of `from_version` into the
    next version's (one per version; a chain runs step by step)."""

    def register(step: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise TypeError(f"{event_type} v{from_version} already has an upcaster")
        UPCASTERS[key] = step
        return step

    return register


def event_from_payload(event_type: str, payload: Payload, version: int = 1) -> DomainEvent:
    """Rebuild a typed event from its stored form, upcast from the stored `version` to the
    class's current one. ValueError for an unknown type, a version newer than this code or
    a missing upcaster."""
    try:
        cls = EVENT_TYPES[event_type]
    except KeyError:
        raise ValueError(f"unknown event type {event_type!r}") from None
    if version > cls.event_version:
        raise ValueError(
            f"{event_type} v{version} is newer than this code knows (v{cls.event_version})"
        )
    while version < cls.event_version:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise ValueError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
        payload = step(payload)
        version += 1
    return cls.model_validate(payload)
