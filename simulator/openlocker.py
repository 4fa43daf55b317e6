"""The `openlocker` dialect as the upstream Open-Locker `locker-client` speaks it.

Written from the client's source (`../shared/peer/locker-client/src`), deliberately NOT
from the backend's contract models: what this module emits is what the real client
emits, and what it accepts is what the real client accepts. The tests check its output
against the upstream JSON schemas.

What the real client does, and so this module:

* every message it publishes carries a fresh `message_id` (uuid4) and a `timestamp`;
* heartbeat `{timestamp, uptime_seconds (integer), message_id}` on `state/heartbeat`,
  not retained; last will `{message_id, timestamp, status: offline, reason}` on
  `state/connection`; a retained door snapshot on `state/compartments`; no events;
* a command without non-empty `action`, `message_id`, `transaction_id` and `timestamp`
  is dropped silently; a `message_id` seen before is dropped; a `transaction_id` seen
  before is dropped too -- the stored answer is never sent again;
* `expires_at` is ignored;
* `apply_config` needs `{compartment_number >= 1, slaveId >= 1, address 0..7}` per entry,
  no duplicate number or relay, and a `config_hash` equal to its own: SHA-256 of
  `JSON.stringify` of the entries sorted by number. Otherwise `INVALID_CONFIG`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HIGHEST_RELAY = 7
_HEX64 = re.compile(r"^[a-fA-F0-9]{64}$")


def _iso(moment: datetime) -> str:
    """`new Date().toISOString()`: UTC with milliseconds and a `Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _dump(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def client_config_hash(compartments: list[dict[str, int]]) -> str:
    """The client's `computeAppliedConfigHash`: sha256(JSON.stringify(sorted entries))."""
    entries = sorted(
        (
            {
                "compartment_number": c["compartment_number"],
                "slaveId": c["slaveId"],
                "address": c["address"],
            }
            for c in compartments
        ),
        key=lambda c: c["compartment_number"],
    )
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


class OpenLockerWire:
    """Payloads exactly as the real client builds them."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    def _envelope(self, payload: dict[str, Any]) -> bytes:
        # mqttService.prepareMQTTPayload: the payload, then message_id, then timestamp
        out = {**payload, "message_id": str(uuid.uuid4())}
        out.setdefault("timestamp", _iso(self.clock()))
        return _dump(out)

    def register(self, client_id: str) -> bytes:
        return self._envelope({"client_id": client_id, "timestamp": _iso(self.clock())})

    def heartbeat(self, uptime_seconds: float) -> bytes:
        return self._envelope(
            {"timestamp": _iso(self.clock()), "uptime_seconds": int(uptime_seconds)}
        )

    def last_will(self) -> bytes:
        return _dump(
            {
                "message_id": str(uuid.uuid4()),
                "timestamp": _iso(self.clock()),
                "status": "offline",
                "reason": "mqtt_last_will",
            }
        )

    def response(
        self,
        action: str,
        transaction_id: str,
        *,
        error_code: str | None = None,
        message: str | None = None,
        applied_config_hash: str | None = None,
    ) -> bytes:
        payload: dict[str, Any] = {
            "type": "command_response",
            "action": action,
            "result": "error" if error_code else "success",
            "transaction_id": transaction_id,
            "timestamp": _iso(self.clock()),
        }
        if error_code:
            payload["error_code"] = error_code
            payload["message"] = message or "Unknown error occurred"
        else:
            if message is not None:
                payload["message"] = message
            if applied_config_hash is not None:
                payload["applied_config_hash"] = applied_config_hash
        return self._envelope(payload)

    def snapshot(self, doors: Mapping[int, str]) -> bytes:
        entries = [{"compartment_number": n, "door_state": s} for n, s in sorted(doors.items())]
        return self._envelope({"compartments": entries})


@dataclass(frozen=True)
class ClientCommand:
    """A command the real client would process."""

    action: str
    message_id: str
    transaction_id: str
    data: dict[str, Any]


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def accept_command(raw: bytes) -> ClientCommand | None:
    """The client's envelope check (`parseMQTTCommand`): None where it drops the message."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if not all(_text(data.get(k)) for k in ("action", "message_id", "transaction_id", "timestamp")):
        return None
    body = data.get("data", {})
    if not isinstance(body, dict):
        return None
    return ClientCommand(data["action"], data["message_id"], data["transaction_id"], body)


def open_number(command: ClientCommand) -> int | None:
    """`data.compartment_number` if the client's open schema accepts it."""
    number = command.data.get("compartment_number")
    return number if _positive(number) else None


INVALID_COMMAND = "INVALID_COMMAND"  # the client's schema refused the payload
INVALID_CONFIG = "INVALID_CONFIG"  # its apply_config rules refused the mapping


def config_problem(command: ClientCommand) -> tuple[str, str] | None:
    """(error code, message) the client answers an apply_config with; None: applied."""
    data = command.data
    entries = data.get("compartments")
    interval = data.get("heartbeat_interval_seconds")
    invalid = (INVALID_COMMAND, "Invalid apply_config payload.")
    if not isinstance(data.get("config_hash"), str) or not _HEX64.match(data["config_hash"]):
        return invalid
    if not _positive(interval) or not isinstance(entries, list):
        return invalid
    for entry in entries:
        if not isinstance(entry, dict) or not (
            _positive(entry.get("compartment_number")) and _positive(entry.get("slaveId"))
        ):
            return invalid
        address = entry.get("address")
        if not isinstance(address, int) or isinstance(address, bool) or address < 0:
            return invalid
    for entry in entries:
        if entry["address"] > HIGHEST_RELAY:
            return (
                INVALID_CONFIG,
                f"compartment addresses must be integers between 0 and {HIGHEST_RELAY}",
            )
    numbers = [e["compartment_number"] for e in entries]
    if len(set(numbers)) != len(numbers):
        return INVALID_CONFIG, "duplicate compartment_number is not allowed"
    targets = [(e["slaveId"], e["address"]) for e in entries]
    if len(set(targets)) != len(targets):
        return INVALID_CONFIG, "duplicate relay target is not allowed"
    if data["config_hash"].lower() != client_config_hash(entries):
        return INVALID_CONFIG, "config_hash does not match the provided compartments mapping"
    return None


def reply_problem(raw: bytes) -> str | None:
    """Why the client refuses a provisioning reply (its zod schema): it logs "Received
    malformed provisioning response" and exits, its token used up. None: acceptable."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "Malformed provisioning response"
    if not isinstance(data, dict) or not (
        _text(data.get("message_id")) and _text(data.get("timestamp"))
    ):
        return "Malformed provisioning response"
    if data.get("status") == "success":
        creds = data.get("data")
        if not isinstance(creds, dict) or not (
            _text(creds.get("mqtt_user")) and _text(creds.get("mqtt_password"))
        ):
            return "Malformed provisioning response"
    elif data.get("status") != "error" or not _text(data.get("message")):
        return "Malformed provisioning response"
    return None
