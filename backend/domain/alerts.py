"""Alerts (DESIGN section 7): what an operator must look at, derived from the events.

Pure rules shared by the projection (backend/store/alert_projection.py), the queries
and the views: the kinds, when a bank-offline alert resolves, and the one-line wording.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final, Literal

AlertKind = Literal[
    "late_execution", "bank_offline", "command_failed", "command_expired", "outcome_unknown"
]
ALERT_KINDS: Final[tuple[AlertKind, ...]] = (
    "late_execution",
    "bank_offline",
    "command_failed",
    "command_expired",
    "outcome_unknown",
)
KIND_LABELS: Final[dict[str, str]] = {
    "late_execution": "late execution",
    "bank_offline": "bank offline",
    "command_failed": "command failed",
    "command_expired": "command expired",
    "outcome_unknown": "outcome unknown",
}
TRANSACTION_KINDS: Final = frozenset(
    {"late_execution", "command_failed", "command_expired", "outcome_unknown"}
)
OFFLINE_RESOLVES_AFTER: Final = timedelta(seconds=60)
"""A bank-offline alert resolves once the bank has stayed online this long; going offline
again before that counts one more flap on the same alert."""
MAX_NOTE = 500


def check_note(note: str) -> str:
    """An acknowledgement note: at most 500 characters, no control characters but newline."""
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ValueError(f"note is longer than {MAX_NOTE} characters")
    if any((ord(ch) < 0x20 and ch != "\n") or ord(ch) == 0x7F for ch in note):
        raise ValueError("note must not contain control characters")
    return note


def describe_action(action: str, compartment_number: int | None) -> str:
    if action == "open_compartment" and compartment_number is not None:
        return f"open of compartment {compartment_number}"
    return action.replace("_", " ")
