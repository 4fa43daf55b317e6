"""The status of a command transaction (DESIGN sections 8 and 9), spelled once.

`pending -> sent -> success | error | timeout | expired`; `late` when the device
acted after the command's expiry, `unknown` when it expired after it was sent and no
answer ever came (did the door open?). The aggregate, the projections, the queries, the
views, the API schemas, the CLI, the console and its widgets all use these names.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "AFTER_EXPIRY_STATUSES",
    "LATE_ANSWER_STATUSES",
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
    "CommandStatus",
]


class CommandStatus(StrEnum):
    """Where a command transaction stands."""

    PENDING = "pending"
    """Requested, in the outbox, not yet acknowledged by the broker."""
    SENT = "sent"
    """Published (PUBACK), waiting for the device's answer."""
    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    """Sent, no answer within the command timeout."""
    EXPIRED = "expired"
    """Never delivered before `expires_at`: it never executes."""
    LATE = "late"
    """The device acted, but after the command's expiry (alerted)."""
    UNKNOWN = "unknown"
    """Delivered, expired without an answer: the outcome is unknown."""


OPEN_STATUSES: Final = frozenset({CommandStatus.PENDING, CommandStatus.SENT})
"""Still in flight: the device may yet act."""
TERMINAL_STATUSES: Final = frozenset(CommandStatus) - OPEN_STATUSES
"""Decided: no sweep touches the transaction again."""
LATE_ANSWER_STATUSES: Final = frozenset(
    {CommandStatus.TIMEOUT, CommandStatus.EXPIRED, CommandStatus.UNKNOWN}
)
"""Given up on, yet an answer is still applied (marked late)."""
AFTER_EXPIRY_STATUSES: Final = frozenset({CommandStatus.EXPIRED, CommandStatus.UNKNOWN})
"""An answer to a transaction in one of these came after `expires_at`."""
