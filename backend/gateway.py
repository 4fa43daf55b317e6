"""The ConsoleGateway: everything the TUI may ask of the backend, and nothing more.

The TUI never touches MQTT or SQL: standalone it gets `InProcessGateway` (the
service in the same process); attached it gets the HTTP implementation
(`backend.http.client_gateway`). Both pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, Unpack

from backend.bank_changes import BankChanges
from backend.run_mode import RunMode
from backend.service import LockerService
from backend.views import (
    AlertView,
    BankView,
    CreatedBank,
    EventView,
    HeartbeatSample,
    IssuedToken,
    TransactionView,
    View,
)


class SystemStatus(View):
    """Connectivity as the operator should see it in the status line."""

    broker_connected: bool
    database_ok: bool
    broker_detail: str = ""
    mode: str = RunMode.STANDALONE
    """The backend's run mode (`backend/run_mode.py`)."""
    conditions: list[str] = []
    """Runtime conditions of the backend instance now: `broker_down`, `store_unwritable`."""
    open_ttl_seconds: float = 30.0
    """OPEN_TTL: how long an open waits for its bank before it expires (for the warning)."""


def runtime_conditions(
    service: LockerService, broker_connected: bool, database_ok: bool
) -> dict[str, bool]:
    """Per-instance conditions that cannot be stored (DESIGN section 7)."""
    return {
        "broker_down": not broker_connected,
        "store_unwritable": not database_ok or service.write_error is not None,
    }


class ConsoleGateway(Protocol):
    """Read models, events after a position, and the operator's commands."""

    actor: str

    async def list_banks(self) -> list[BankView]: ...

    async def get_bank(self, uuid: str) -> BankView: ...

    async def list_transactions(
        self, bank_uuid: str | None = None, limit: int = 200
    ) -> list[TransactionView]: ...

    async def get_transaction(self, transaction_id: str) -> TransactionView: ...

    async def events_after(self, position: int = 0, limit: int = 500) -> list[EventView]: ...

    async def search_events(
        self, query: str, limit: int = 500, before: int | None = None
    ) -> list[EventView]: ...

    async def bank_events(self, uuid: str, limit: int = 200) -> list[EventView]: ...

    async def heartbeat_history(self, uuid: str) -> list[HeartbeatSample]: ...

    async def create_bank(
        self,
        name: str,
        location: str,
        compartments: int,
        heartbeat_interval_seconds: int = 30,
    ) -> CreatedBank: ...

    async def update_bank(self, uuid: str, **changes: Unpack[BankChanges]) -> BankView: ...

    async def issue_token(self, uuid: str) -> IssuedToken: ...

    async def revoke(self, uuid: str, reason: str) -> None: ...

    async def request_open(self, uuid: str, number: int) -> TransactionView: ...

    async def request_config_push(self, uuid: str) -> TransactionView: ...

    async def list_alerts(self, include_resolved: bool = False) -> list[AlertView]:
        """Open alerts, newest first; with `include_resolved` every alert."""
        ...

    async def acknowledge_alert(self, alert_id: int, note: str = "") -> AlertView:
        """Record `AlertAcknowledged` with this console's actor and the note."""
        ...

    async def status(self) -> SystemStatus: ...


class InProcessGateway:
    """The gateway over a LockerService in this process (standalone and demo modes)."""

    def __init__(
        self,
        service: LockerService,
        *,
        actor: str,
        broker_connected: Callable[[], bool] | None = None,
        broker_detail: Callable[[], str] | None = None,
    ) -> None:
        self.service = service
        self.actor = actor
        self._broker_connected = broker_connected or (lambda: False)
        self._broker_detail = broker_detail or (lambda: "")

    async def list_banks(self) -> list[BankView]:
        return await self.service.list_banks()

    async def get_bank(self, uuid: str) -> BankView:
        return await self.service.get_bank(uuid)

    async def list_transactions(
        self, bank_uuid: str | None = None, limit: int = 200
    ) -> list[TransactionView]:
        return await self.service.list_transactions(bank_uuid, limit)

    async def get_transaction(self, transaction_id: str) -> TransactionView:
        return await self.service.get_transaction(transaction_id)

    async def events_after(self, position: int = 0, limit: int = 500) -> list[EventView]:
        return await self.service.events_after(position, limit)

    async def search_events(
        self, query: str, limit: int = 500, before: int | None = None
    ) -> list[EventView]:
        return await self.service.search_events(query, limit, before)

    async def bank_events(self, uuid: str, limit: int = 200) -> list[EventView]:
        return await self.service.bank_events(uuid, limit)

    async def heartbeat_history(self, uuid: str) -> list[HeartbeatSample]:
        return await self.service.heartbeat_history(uuid)

    async def create_bank(
        self,
        name: str,
        location: str,
        compartments: int,
        heartbeat_interval_seconds: int = 30,
    ) -> CreatedBank:
        return await self.service.create_bank(
            name,
            location,
            compartments,
            heartbeat_interval_seconds=heartbeat_interval_seconds,
            actor=self.actor,
        )

    async def update_bank(self, uuid: str, **changes: Unpack[BankChanges]) -> BankView:
        return await self.service.update_bank(uuid, actor=self.actor, **changes)

    async def issue_token(self, uuid: str) -> IssuedToken:
        return await self.service.issue_token(uuid, actor=self.actor)

    async def revoke(self, uuid: str, reason: str) -> None:
        await self.service.revoke(uuid, reason=reason, actor=self.actor)

    async def request_open(self, uuid: str, number: int) -> TransactionView:
        return await self.service.request_open(uuid, number, actor=self.actor)

    async def request_config_push(self, uuid: str) -> TransactionView:
        return await self.service.request_config_push(uuid, actor=self.actor)

    async def list_alerts(self, include_resolved: bool = False) -> list[AlertView]:
        return await self.service.list_alerts(include_resolved)

    async def acknowledge_alert(self, alert_id: int, note: str = "") -> AlertView:
        return await self.service.acknowledge_alert(alert_id, note, actor=self.actor)

    async def status(self) -> SystemStatus:
        database_ok = await self.service.db.read(self.service.db.ping)
        conditions = runtime_conditions(self.service, self._broker_connected(), database_ok)
        return SystemStatus(
            broker_connected=self._broker_connected(),
            database_ok=database_ok,
            broker_detail=self._broker_detail(),
            mode=RunMode.STANDALONE,
            conditions=[name for name, held in conditions.items() if held],
            open_ttl_seconds=self.service.settings.open_ttl_seconds,
        )
