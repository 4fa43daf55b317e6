"""What a device puts on the wire: its topics and the payloads it builds.

Dialect `seed` (DESIGN section 3): payloads built from the contract models. Dialect
`openlocker` (`upstream`): payloads built as the real upstream client builds them, by
`simulator.openlocker` -- never from the backend's models -- on the split state topics
(heartbeat, compartments, connection); checked against the upstream JSON schemas in
the tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.domain import topics
from backend.domain.contract import (
    Action,
    CommandResponse,
    CompartmentSnapshotItem,
    CompartmentsSnapshot,
    ConnectionLost,
    DeviceEvent,
    Heartbeat,
    HeartbeatData,
    RegisterRequest,
)
from backend.domain.outcomes import ResponseResult
from simulator.hardware import DoorState
from simulator.openlocker import OpenLockerWire


@dataclass(frozen=True)
class DeviceTopics:
    """The topics one bank's device uses."""

    command: str
    response: str
    event: str
    heartbeat: str
    will: str
    snapshot: str | None

    @classmethod
    def for_bank(cls, bank_uuid: str, *, upstream: bool, legacy_status: bool) -> DeviceTopics:
        state = topics.device_topic(bank_uuid, "state")
        return cls(
            command=topics.command_topic(bank_uuid),
            response=topics.device_topic(bank_uuid, "status" if legacy_status else "response"),
            event=topics.device_topic(bank_uuid, "event"),
            heartbeat=f"{state}/heartbeat" if upstream else state,
            will=f"{state}/connection" if upstream else state,
            snapshot=f"{state}/compartments" if upstream else None,
        )


class Wire:
    """Builds a device's payloads (bytes) with its clock. `upstream` is the `openlocker`
    dialect: then every payload is built as the real upstream client builds it
    (`simulator.openlocker`, not from the backend's models)."""

    def __init__(self, clock: Callable[[], datetime], *, upstream: bool) -> None:
        self.clock = clock
        self.upstream = upstream
        self.openlocker = OpenLockerWire(clock) if upstream else None

    def message_id(self) -> str | None:
        return str(uuid.uuid4()) if self.upstream else None

    def register(self, client_id: str) -> bytes:
        if self.openlocker is not None:
            return self.openlocker.register(client_id)
        return RegisterRequest(
            client_id=client_id, timestamp=self.clock(), message_id=self.message_id()
        ).to_bytes()

    def heartbeat(self, uptime_seconds: float) -> bytes:
        if self.openlocker is not None:
            return self.openlocker.heartbeat(uptime_seconds)
        data = HeartbeatData(timestamp=self.clock(), uptime_seconds=round(uptime_seconds, 3))
        return Heartbeat(data=data, message_id=self.message_id()).to_bytes()

    def last_will(self) -> bytes:
        if self.openlocker is not None:
            return self.openlocker.last_will()
        return ConnectionLost(
            timestamp=self.clock(), reason="mqtt_last_will", message_id=self.message_id()
        ).to_bytes()

    def response(
        self,
        action: Action,
        transaction_id: str,
        *,
        error_code: str | None = None,
        message: str | None = None,
        applied_config_hash: str | None = None,
    ) -> bytes:
        if self.openlocker is not None:
            return self.openlocker.response(
                action,
                transaction_id,
                error_code=error_code,
                message=message,
                applied_config_hash=applied_config_hash,
            )
        return CommandResponse(
            action=action,
            result=ResponseResult.ERROR if error_code else ResponseResult.SUCCESS,
            transaction_id=transaction_id,
            timestamp=self.clock(),
            message=message,
            error_code=error_code,
            applied_config_hash=applied_config_hash,
            message_id=self.message_id(),
        ).to_bytes()

    def door_event(self, compartment: int, state: DoorState) -> bytes:
        return self._event(
            "door_state_changed", {"compartment_number": compartment, "state": state}
        )

    def qr_event(self, qr_payload: str, scanner: str) -> bytes:
        return self._event("qr_scanned", {"qr_payload": qr_payload, "scanner": scanner})

    def _event(self, event: str, data: dict[str, Any]) -> bytes:
        return DeviceEvent(
            event=event,
            event_id=str(uuid.uuid4()),
            timestamp=self.clock(),
            data=data,
            message_id=self.message_id(),
        ).to_bytes()

    def snapshot(self, doors: Mapping[int, DoorState]) -> bytes:
        if self.openlocker is not None:
            return self.openlocker.snapshot(doors)
        items = [
            CompartmentSnapshotItem(compartment_number=n, door_state=s)
            for n, s in sorted(doors.items())
        ]
        return CompartmentsSnapshot(compartments=items, message_id=self.message_id()).to_bytes()
