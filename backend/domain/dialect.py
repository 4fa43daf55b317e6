"""The two contract dialects a bank can speak (DESIGN section 3.1).

`seed` is the seed plan's contract; `openlocker` is what the upstream Open-Locker
`locker-client` speaks (its AsyncAPI + JSON schemas). A bank's dialect decides how
its commands are built and how its config hash is computed; inbound, both forms are
accepted on every topic. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Literal, get_args

Dialect = Literal["seed", "openlocker"]
DialectChoice = Literal["auto", "seed", "openlocker"]
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)
DIALECT_CHOICES: tuple[DialectChoice, ...] = get_args(DialectChoice)
DEFAULT_DIALECT: Dialect = "seed"

# openlocker: the client refuses relay addresses beyond its board (0..7) and slave id 0.
OPENLOCKER_MIN_SLAVE_ID = 1


def parse_choice(text: str) -> DialectChoice:
    """`auto`, `seed` or `openlocker` (case-insensitive); ValueError otherwise."""
    value = text.strip().lower()
    if value not in DIALECT_CHOICES:
        raise ValueError(f"dialect must be one of {', '.join(DIALECT_CHOICES)} (got {text!r})")
    return value


def dialect_of_registration(has_message_id: bool) -> Dialect:
    """What a registration suggests: one that carries `message_id` is openlocker."""
    return "openlocker" if has_message_id else "seed"


def effective_dialect(choice: str, detected: str | None) -> Dialect | None:
    """An explicit choice wins; `auto` follows the registration (None until one arrived)."""
    if choice in DIALECTS:
        return choice
    if detected in DIALECTS:
        return detected
    return None


def replays_stored_answers(dialect: str | None) -> bool:
    """Whether a device of this dialect re-sends its stored response when a transaction is
    asked again. The seed's device does (seed section 6.1); the upstream client never does
    (it drops a repeated `transaction_id` silently), so re-asking it cannot recover a lost
    answer."""
    return dialect != "openlocker"


def uses_message_ids(dialect: str | None) -> bool:
    """Whether commands to this dialect carry a `message_id` (unique per publish)."""
    return dialect == "openlocker"


Mapping = tuple[int, int, int]  # (compartment number, slave id, address)


def seed_config_hash(compartments: Iterable[Mapping], heartbeat_interval_seconds: int) -> str:
    """Seed: SHA-256 hex of the canonical JSON of the sorted compartment list plus the
    interval (DESIGN section 3)."""
    items = sorted(
        ({"id": n, "slaveId": s, "address": a} for n, s, a in compartments),
        key=lambda item: item["id"],
    )
    canonical = json.dumps(
        {"compartments": items, "heartbeat_interval_seconds": heartbeat_interval_seconds},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def openlocker_config_hash(compartments: Iterable[Mapping]) -> str:
    """openlocker: the client's own hash, SHA-256 hex of `JSON.stringify` of
    `[{compartment_number, slaveId, address}]` sorted by number (keys in that order, no
    spaces; the interval is not part of it). The client verifies it and refuses a
    mismatch."""
    items = [
        {"compartment_number": n, "slaveId": s, "address": a}
        for n, s, a in sorted(compartments, key=lambda m: m[0])
    ]
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode()).hexdigest()


def config_hash_for(
    dialect: str | None, compartments: Iterable[Mapping], heartbeat_interval_seconds: int
) -> str:
    """The hash a device of `dialect` reports after applying this mapping."""
    if dialect == "openlocker":
        return openlocker_config_hash(compartments)
    return seed_config_hash(compartments, heartbeat_interval_seconds)
