"""Banks driven through the service's device operations (no broker): a provisioned bank,
a heartbeat as the MQTT listener hands it over."""

from __future__ import annotations

from datetime import datetime

from backend.device_service import HeartbeatIn
from backend.domain.contract import Heartbeat, HeartbeatData
from backend.service import LockerService


async def provisioned(service: LockerService, compartments: int = 4) -> str:
    """A new bank ("Hall", Berlin) whose device has registered; its uuid."""
    created = await service.create_bank("Hall", "Berlin", compartments)
    assert await service.devices.register(created.token, "client-1") == "success"
    return created.uuid


def beat(bank: str, at: datetime) -> HeartbeatIn:
    hb = Heartbeat(data=HeartbeatData(timestamp=at, uptime_seconds=1))
    return HeartbeatIn(bank, hb, at)
