"""Pydantic models of every MQTT payload in the contract (DESIGN section 3).

The backend validates what it receives with these models and builds what it
sends with them; the simulator does the same from the device side, so both
ends share one definition of the wire format.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
)

from backend.domain.dialect import seed_config_hash
from backend.domain.outcomes import ResponseResult
from backend.domain.timeutil import ensure_utc, iso

MAX_PAYLOAD_BYTES = 64 * 1024

ShortId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(max_length=1024)]
CompartmentNumber = Annotated[int, Field(ge=1, le=10_000)]
Action = Literal["open_compartment", "apply_config", "update_firmware"]


class ContractError(ValueError):
    """A payload that does not satisfy the contract; the message is the reason."""


class Message(BaseModel):
    """Base of all contract payloads: unknown fields ignored, timestamps UTC."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return ensure_utc(value) if isinstance(value, datetime) else value

    @field_serializer("*", when_used="json")
    def _ser(self, value: Any) -> Any:
        return iso(value) if isinstance(value, datetime) else value

    def to_bytes(self) -> bytes:
        """The JSON wire form (None-valued optional fields are left out)."""
        return self.model_dump_json(exclude_none=True).encode()


class Envelope(Message):
    """Upstream's optional envelope fields, accepted on every message."""

    message_id: ShortId | None = None


# --- provisioning -------------------------------------------------------------------------


class RegisterRequest(Envelope):
    client_id: ShortId
    timestamp: datetime | None = None


class Credentials(Message):
    mqtt_user: str
    mqtt_password: str


class ProvisioningReply(Envelope):
    timestamp: datetime | None = None
    status: Literal["success", "error"]
    data: Credentials | None = None
    message: Text | None = None


INVALID_TOKEN_MESSAGE = "Invalid or expired provisioning token."


# --- commands -----------------------------------------------------------------------------


class OpenCompartmentData(Message):
    compartment_number: CompartmentNumber


class CompartmentMapping(Message):
    id: CompartmentNumber
    slaveId: Annotated[int, Field(ge=0, le=247)]
    address: Annotated[int, Field(ge=0, le=65535)]


class ApplyConfigData(Message):
    config_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    heartbeat_interval_seconds: Annotated[int, Field(ge=1, le=3600)]
    compartments: list[CompartmentMapping]


class Command(Envelope):
    action: Action
    transaction_id: ShortId
    timestamp: datetime
    expires_at: datetime
    data: dict[str, Any]

    def open_data(self) -> OpenCompartmentData:
        return OpenCompartmentData.model_validate(self.data)

    def config_data(self) -> ApplyConfigData:
        return ApplyConfigData.model_validate(self.data)


# --- device -> backend --------------------------------------------------------------------


class CommandResponse(Envelope):
    type: Literal["command_response"] = "command_response"
    action: Action
    result: ResponseResult
    transaction_id: ShortId
    timestamp: datetime
    message: Text | None = None
    error_code: Annotated[str, StringConstraints(max_length=64)] | None = None
    applied_config_hash: Annotated[str, StringConstraints(max_length=128)] | None = None


class DoorStateData(Message):
    compartment_number: CompartmentNumber
    state: Literal["open", "closed"]


class QrScannedData(Message):
    qr_payload: Annotated[str, StringConstraints(max_length=4096)]
    scanner: Annotated[str, StringConstraints(max_length=128)]


# Events with a domain rule, and documented ones recorded as DeviceEventRecorded (DESIGN 7;
# the upstream AsyncAPI names `qr_scanned` and `tamper_detected` as its future events).
RULED_EVENTS = frozenset({"door_state_changed", "qr_scanned"})
RECORDED_EVENTS = frozenset({"tamper_detected"})


class DeviceEvent(Envelope):
    type: Literal["event"] = "event"
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    event_id: ShortId | None = None
    timestamp: datetime
    data: dict[str, Any]

    def door_data(self) -> DoorStateData:
        return DoorStateData.model_validate(self.data)

    def qr_data(self) -> QrScannedData:
        return QrScannedData.model_validate(self.data)

    def dedup_key(self) -> str | None:
        return self.event_id or self.message_id


class HeartbeatData(Message):
    timestamp: datetime
    uptime_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Heartbeat(Envelope):
    type: Literal["state"] = "state"
    state: Literal["heartbeat"] = "heartbeat"
    data: HeartbeatData


class ConnectionLost(Envelope):
    type: Literal["state"] = "state"
    state: Literal["connection_lost"] = "connection_lost"
    status: Literal["offline"] = "offline"
    timestamp: datetime
    reason: Annotated[str, StringConstraints(max_length=128)] | None = None


class CompartmentSnapshotItem(Message):
    compartment_number: CompartmentNumber
    door_state: Literal["open", "closed", "unknown"]


class CompartmentsSnapshot(Envelope):
    """Upstream's retained door snapshot on `locker/{u}/state/compartments`. The entries
    are validated one by one (`snapshot_entries`): a bad one is refused alone."""

    timestamp: datetime | None = None
    compartments: list[Any]


def snapshot_entries(
    snapshot: CompartmentsSnapshot,
) -> tuple[list[CompartmentSnapshotItem], list[str]]:
    """The valid entries of a door snapshot and the reasons of the invalid ones."""
    good: list[CompartmentSnapshotItem] = []
    bad: list[str] = []
    for index, entry in enumerate(snapshot.compartments):
        try:
            if not isinstance(entry, dict):
                raise ContractError("not an object")
            good.append(parse(CompartmentSnapshotItem, entry))
        except ContractError as exc:
            bad.append(f"compartments.{index}: {exc}")
    return good, bad


class FlatHeartbeat(Envelope):
    """Upstream's heartbeat on `locker/{u}/state/heartbeat`: `{message_id, timestamp,
    uptime_seconds}` at the top level."""

    timestamp: datetime
    uptime_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ServerStatus(Message):
    status: Literal["online", "offline"]


# --- parsing ------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def decode_json(raw: bytes | bytearray | str) -> dict[str, Any]:
    """Size check, UTF-8 and JSON object; raise ContractError with the reason."""
    if isinstance(raw, str):
        raw = raw.encode()
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"payload is not UTF-8 ({exc.reason})") from None
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise ContractError(f"payload is not JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise ContractError("payload is not a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# One decoder for every message: `json.loads` with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse(model: type[M], raw: bytes | bytearray | str | dict[str, Any]) -> M:
    """Validate a payload against a contract model; raise ContractError with a short reason."""
    data = raw if isinstance(raw, dict) else decode_json(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        raise ContractError(f"{where}: {first.get('msg', 'invalid')}"[:200]) from None


def parse_heartbeat(raw: bytes | bytearray | str | dict[str, Any]) -> Heartbeat:
    """A heartbeat in either form: the seed's nested `{type, state, data: {timestamp,
    uptime_seconds}}` or upstream's flat `{message_id, timestamp, uptime_seconds}`."""
    data = raw if isinstance(raw, dict) else decode_json(raw)
    if "data" in data or data.get("state") == "heartbeat":
        return parse(Heartbeat, data)
    flat = parse(FlatHeartbeat, data)
    return Heartbeat(
        message_id=flat.message_id,
        data=HeartbeatData(timestamp=flat.timestamp, uptime_seconds=flat.uptime_seconds),
    )


def parse_state(raw: bytes | bytearray | str) -> Heartbeat | ConnectionLost:
    """A message on `locker/{u}/state`: a heartbeat (either form) or a last will."""
    data = decode_json(raw)
    state = data.get("state")
    if state == "heartbeat" or (state is None and "uptime_seconds" in data):
        return parse_heartbeat(data)
    if state == "connection_lost" or data.get("status") == "offline":
        return parse(ConnectionLost, data)
    raise ContractError(f"unknown state {str(state)[:40]!r}")


# --- config hash --------------------------------------------------------------------------


def config_hash(compartments: list[CompartmentMapping], heartbeat_interval_seconds: int) -> str:
    """Seed dialect: SHA-256 hex of the canonical JSON of the sorted compartment list plus
    the interval (`backend.domain.dialect` holds both dialects' hashes)."""
    return seed_config_hash(
        ((c.id, c.slaveId, c.address) for c in compartments), heartbeat_interval_seconds
    )
