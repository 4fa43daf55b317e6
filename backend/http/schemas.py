"""Request and response bodies of the REST API that are not read-model views.

Request bodies are strict (``12`` is a number, ``"12"`` is not; unknown fields
are refused) so a typo in a mobile app fails loudly instead of being ignored.
Limits on values (name length, compartment count, interval) are the domain's
and are checked there, so every caller gets the same rule and the same words;
the JSON schema states them (``json_schema_extra``) so the OpenAPI document
says what the server accepts.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

from backend.domain.bank import MAX_COMPARTMENTS, MAX_LOCATION, MAX_NAME
from backend.domain.contract import CompartmentNumber
from backend.views import TransactionView

__all__ = [
    "ApiErrorBody",
    "CommandAccepted",
    "CreateBankRequest",
    "HealthCheck",
    "HealthReport",
    "HookAclBody",
    "HookAnswer",
    "HookAuthBody",
    "HookSuperuserBody",
    "MappingEntry",
    "OpenCompartmentRequest",
    "RevokeRequest",
    "UpdateBankRequest",
    "WhoAmI",
]


_COMPARTMENT_NUMBER: Final = {
    k: v for k, v in TypeAdapter(CompartmentNumber).json_schema().items() if k != "type"
}


def _integral(value: object) -> object:
    """``12.0`` is the integer 12 in JSON Schema (and so in the OpenAPI document); ``"12"``
    and ``12.5`` are still refused by the strict model."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]

# "Something other than whitespace", whitespace being what str.strip() removes (the domain
# trims names), spelled out because \s differs between Python and ECMA/JSON Schema regexes.
NOT_ONLY_SPACE: Final = (
    r"[^\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
# No C0 control character or DEL (the domain refuses them in names and locations).
NO_CONTROL: Final = r"^[^\u0000-\u001f\u007f]*$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MappingEntry(_Request):
    """One compartment's Modbus target."""

    number: JsonInt = Field(
        description="The compartment's number (from 1).", json_schema_extra=_COMPARTMENT_NUMBER
    )
    slave_id: JsonInt = Field(
        description="Modbus slave id (0-247; an openlocker bank needs 1 or more).",
        json_schema_extra={"minimum": 0, "maximum": 247},
    )
    address: JsonInt = Field(
        description="Relay address on that slave (0-65535).",
        json_schema_extra={"minimum": 0, "maximum": 65535},
    )


DialectChoiceField = Literal["auto", "seed", "openlocker"]


class CreateBankRequest(_Request):
    """``POST /api/locker-banks``."""

    name: str = Field(
        description=f"Shown to operators; 1 to {MAX_NAME} characters (trimmed).",
        json_schema_extra={
            "minLength": 1,
            "maxLength": MAX_NAME,
            "allOf": [{"pattern": NOT_ONLY_SPACE}, {"pattern": NO_CONTROL}],
        },
    )
    location: str = Field(
        default="",
        description=f"Where the cabinet stands; up to {MAX_LOCATION} characters (trimmed).",
        json_schema_extra={"maxLength": MAX_LOCATION, "pattern": NO_CONTROL},
    )
    compartments: JsonInt = Field(
        default=12,
        description=f"How many compartments (1 to {MAX_COMPARTMENTS}), numbered from 1.",
        json_schema_extra={"minimum": 1, "maximum": MAX_COMPARTMENTS},
    )
    heartbeat_interval_seconds: JsonInt = Field(
        default=30,
        description="How often the device reports it is alive (1 to 3600 s).",
        json_schema_extra={"minimum": 1, "maximum": 3600},
    )
    dialect: DialectChoiceField = Field(
        default="auto",
        description="Contract dialect: auto (decided by the registration: a `message_id` in "
        "it means openlocker), seed or openlocker.",
    )
    mapping: list[MappingEntry] | SkipJsonSchema[None] = Field(
        default=None,
        description="Explicit Modbus mapping (replaces `compartments`: 1..N on slave 1).",
        json_schema_extra={"minItems": 1, "maxItems": MAX_COMPARTMENTS},
    )


class UpdateBankRequest(_Request):
    """``PATCH /api/locker-banks/{uuid}``: only the fields given change. A changed mapping,
    interval or dialect of a provisioned bank is pushed at once (``apply_config``)."""

    name: str | SkipJsonSchema[None] = Field(
        default=None,
        description=f"1 to {MAX_NAME} characters (trimmed).",
        json_schema_extra={
            "minLength": 1,
            "maxLength": MAX_NAME,
            "allOf": [{"pattern": NOT_ONLY_SPACE}, {"pattern": NO_CONTROL}],
        },
    )
    location: str | SkipJsonSchema[None] = Field(
        default=None,
        description=f"Up to {MAX_LOCATION} characters (trimmed).",
        json_schema_extra={"maxLength": MAX_LOCATION, "pattern": NO_CONTROL},
    )
    heartbeat_interval_seconds: JsonInt | SkipJsonSchema[None] = Field(
        default=None,
        description="1 to 3600 s.",
        json_schema_extra={"minimum": 1, "maximum": 3600},
    )
    dialect: DialectChoiceField | SkipJsonSchema[None] = Field(
        default=None, description="Contract dialect: auto (by the registration), seed, openlocker."
    )
    compartments: list[MappingEntry] | SkipJsonSchema[None] = Field(
        default=None,
        description=f"The whole new mapping (1 to {MAX_COMPARTMENTS} entries, unique numbers "
        "and targets).",
        json_schema_extra={"minItems": 1, "maxItems": MAX_COMPARTMENTS},
    )


class OpenCompartmentRequest(_Request):
    """``POST /api/compartments/{uuid}/open`` (``uuid`` is the bank's)."""

    compartment_number: JsonInt = Field(
        description="The compartment's number in its bank (the device contract's range).",
        json_schema_extra=_COMPARTMENT_NUMBER,
    )


class RevokeRequest(_Request):
    """``POST /api/locker-banks/{uuid}/revoke``: the reason is required."""

    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why (required); recorded with the event (no NUL characters).",
        json_schema_extra={"pattern": r"^[^\u0000]*$"},
    )


class AcknowledgeAlertRequest(_Request):
    """``POST /api/alerts/{id}/ack`` (the body may be empty)."""

    note: str = Field(
        default="",
        max_length=500,
        description="What was found or done (no control characters but newline).",
    )


class CommandAccepted(BaseModel):
    """A command was recorded and queued for the device (202).

    ``state`` is the transaction's status when the answer was written
    (``pending`` until the broker acknowledged the publication). Poll
    ``GET /api/transactions/{transaction_id}`` or follow the event stream for
    the outcome.
    """

    transaction_id: str
    state: str
    transaction: TransactionView


class ApiErrorBody(BaseModel):
    """Every error answer of the REST API."""

    error: str = Field(description="One sentence for a human.")
    type: str = Field(
        description="Unauthorized, Forbidden, NotFound, InvalidInput, RuleViolation, "
        "ConcurrencyConflict, DomainError, MethodNotAllowed or InternalError."
    )


class WhoAmI(BaseModel):
    """The bearer token's name (recorded as `actor`) and role."""

    name: str
    role: Literal["app", "operator"]


class HealthCheck(BaseModel):
    ok: bool
    detail: str = ""


class HealthReport(BaseModel):
    """``GET /healthz``: 200 when every check is ok, 503 otherwise."""

    status: Literal["ok", "unavailable"]
    database: HealthCheck
    broker: HealthCheck
    conditions: list[str] = Field(
        default_factory=list,
        description="Runtime conditions of this instance now (broker_down, store_unwritable).",
    )
    accounts: HealthCheck | None = None
    """`AUTH_MODE=dynsec`: the admin connection to Mosquitto's dynamic-security plugin and
    the last command to it (absent in hook mode)."""


# ----- the auth hook's bodies (documentation only: backend.http.hook parses them) -------


class HookAuthBody(BaseModel):
    """``POST /api/mosq/auth`` (JSON or form; ``client_id`` is accepted for ``clientid``)."""

    username: str | None
    password: str | None
    clientid: str | None


class HookSuperuserBody(BaseModel):
    """``POST /api/mosq/superuser``."""

    username: str | None


class HookAclBody(BaseModel):
    """``POST /api/mosq/acl``; EMQX may send ``action`` in place of ``acc``.

    Exactly one of ``acc`` and ``action`` (the hook also takes both when they agree).
    """

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["acc"]}, {"required": ["action"]}]}
    )

    username: str | None
    clientid: str | None
    topic: str
    acc: int | SkipJsonSchema[None] = Field(
        default=None, description="1 receive, 2 publish, 3 read+write, 4 subscribe."
    )
    action: Literal["publish", "subscribe"] | SkipJsonSchema[None] = None


class HookAnswer(BaseModel):
    """Allow is 200 ``{"ok": true, "result": "allow"}``; deny is 403 with ``error``."""

    ok: bool
    result: Literal["allow", "deny"] | None = None
    error: str | None = None
