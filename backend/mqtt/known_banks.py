"""Which bank uuids exist: a positive cache in front of the store.

Banks are never deleted, so a uuid once found stays known; an unknown uuid is asked
again each time (it may be created later), which keeps garbage from being cached.
"""

from __future__ import annotations

from backend.device_service import DeviceService
from backend.store.event_store import RecordedEvent


class KnownBanks:
    """`await known(uuid)`: does this bank exist?"""

    def __init__(self, devices: DeviceService) -> None:
        self._devices = devices
        self._known: set[str] = set()

    async def known(self, bank_uuid: str) -> bool:
        if bank_uuid in self._known:
            return True
        if await self._devices.bank_exists(bank_uuid):
            self._known.add(bank_uuid)
            return True
        return False

    def observe(self, events: list[RecordedEvent]) -> None:
        """Learn new banks from the events this process records."""
        for event in events:
            if event.event_type == "LockerBankCreated":
                self._known.add(event.aggregate_uuid)
