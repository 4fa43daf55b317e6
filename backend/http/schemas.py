"""Request and response bodies of the REST API that are not read-model views.

Request bodies are strict (``12`` is a number, ``"12"`` is not; unknown fields
are refused) so a typo in a mobile app fails loudly instead of being ignored.
Limits on values (name length, compartment count, interval) are the domain's
and are checked there, so every caller gets the same rule and the same words.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    "OpenCompartmentRequest",
    "RevokeRequest",
    "WhoAmI",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CreateBankRequest(_Request):
    """``POST /api/locker-banks``."""

    name: str = Field(description="Shown to operators; 1 to 100 characters.")
    location: str = Field(default="", description="Where the cabinet stands; up to 200 characters.")
    compartments: int = Field(
        default=12, description="How many compartments (1 to 1000), numbered from 1."
    )
    heartbeat_interval_seconds: int = Field(
        default=30, description="How often the device reports it is alive (1 to 3600 s)."
    )


class OpenCompartmentRequest(_Request):
    """``POST /api/compartments/{uuid}/open`` (``uuid`` is the bank's)."""

    compartment_number: int = Field(description="The compartment's number in its bank.")


class RevokeRequest(_Request):
    """``POST /api/locker-banks/{uuid}/revoke`` (the body may be empty)."""

    reason: str = Field(default="", max_length=500, description="Recorded with the event.")


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
    """``POST /api/mosq/acl``; EMQX may send ``action`` in place of ``acc``."""

    username: str | None
    clientid: str | None
    topic: str
    acc: int | None = Field(
        default=None, description="1 receive, 2 publish, 3 read+write, 4 subscribe."
    )
    action: Literal["publish", "subscribe"] | None = None


class HookAnswer(BaseModel):
    """Allow is 200 ``{"ok": true, "result": "allow"}``; deny is 403 with ``error``."""

    ok: bool
    result: Literal["allow", "deny"] | None = None
    error: str | None = None
