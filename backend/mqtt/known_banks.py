"""Which bank uuids exist: a positive cache in front of the store.

Banks are never deleted, so a uuid once found stays known; an unknown uuid is asked
again each time (it may be created later), which keeps garbage from being cached.
The first question loads every existing uuid in one query (a fleet's first heartbeats
after a start would otherwise cost one bank read each: 20,000 reads for 20,000 banks);
later ones ask the store for that uuid alone.
"""

from __future__ import annotations

import asyncio

from backend.device_service import DeviceService
from backend.store.event_store import RecordedEvent


class KnownBanks:
    """`await known(uuid)`: does this bank exist?"""

    def __init__(self, devices: DeviceService) -> None:
        self._devices = devices
        self._known: set[str] = set()
        self._loaded: asyncio.Task[set[str]] | None = None

    def known_now(self, bank_uuid: str) -> bool:
        """Known without asking the store (False: ask `known`)."""
        return bank_uuid in self._known

    async def known(self, bank_uuid: str) -> bool:
        if bank_uuid in self._known:
            return True
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._devices.bank_uuids())
        if not self._loaded.done():
            try:
                self._known |= await asyncio.shield(self._loaded)
            except Exception:
                self._loaded = None  # asked again next time; this one asks alone
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
