"""Typed results of the device side: what a device answered, what became of a
registration, and what became of one inbound message (status and reason kept apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Disposition", "Outcome", "RegistrationResult", "ResponseResult"]


class ResponseResult(StrEnum):
    """A command response's `result` (DESIGN section 3): what the device says it did."""

    SUCCESS = "success"
    ERROR = "error"


class RegistrationResult(StrEnum):
    """What became of a `locker/register/{token}` message (also the metric's label)."""

    SUCCESS = "success"
    """Provisioned: credentials are in the outbox."""
    ERROR = "error"
    """Unknown, used or revoked token: an error reply is in the outbox."""
    RATE_LIMITED = "rate_limited"
    """Too many failures (this client id, or all clients together): no reply."""


class Disposition(StrEnum):
    """What became of one inbound device message."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    """Seen before (same `event_id`/`message_id`, or an answered transaction): counted only."""
    REJECTED = "rejected"
    """Valid on the wire, refused by the domain or the tracker: stored as rejected."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The disposition of one inbound message, with the refusal's reason and lateness."""

    disposition: Disposition
    reason: str = ""
    late: bool = False

    @classmethod
    def applied(cls, *, late: bool = False) -> Outcome:
        return cls(Disposition.APPLIED, late=late)

    @classmethod
    def duplicate(cls) -> Outcome:
        return cls(Disposition.DUPLICATE)

    @classmethod
    def rejected(cls, reason: str) -> Outcome:
        return cls(Disposition.REJECTED, reason)
