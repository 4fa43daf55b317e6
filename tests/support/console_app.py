"""Driving the console in tests: a real LockerService on SQLite with fixed ids and
secrets, the locker side through the service's device operations (register, heartbeat,
relay, answer, last will), a switchable broker connection, the toasts raised, and the
small Pilot steps the flows share. (Waiting: `tests/support/waiting.py: app_until`.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual.notifications import Notification, Notify
from textual.pilot import Pilot
from textual.widgets import Static

from backend.device_service import HeartbeatIn
from backend.domain.contract import CommandResponse, Heartbeat, HeartbeatData
from backend.domain.outcomes import Disposition
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from console.app import LockerConsoleApp
from console.screens.bank import BankScreen
from tests.support.settings import make_settings
from tests.support.waiting import app_until
from widgets.bank_table import BankTable
from widgets.keyed_table import KeyedTable

OPERATOR = "alice"
SIZE = (80, 24)
MakeApp = Callable[..., LockerConsoleApp]


def fixed_ids() -> Callable[[], str]:
    """uuid-shaped ids 00000000-0000-4000-8000-000000000001, ...002, ... (banks and commands)."""
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def fixed_secrets() -> Callable[[], str]:
    """Tokens and passwords `secret-0001`, `secret-0002`, ..."""
    counter = itertools.count(1)
    return lambda: f"secret-{next(counter):04d}"


def build_service(tmp_path: Path, clock: FrozenClock) -> LockerService:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'console.db'}")
    return LockerService(settings, clock=clock, new_id=fixed_ids(), new_secret=fixed_secrets())


@dataclass
class Devices:
    """The locker side, driven directly through the service's device operations."""

    service: LockerService
    clock: FrozenClock
    tokens: dict[str, str] = field(default_factory=dict)

    async def bank(
        self, name: str, location: str = "", doors: int = 12, *, online: bool = True
    ) -> str:
        """Create a bank (as the operator would) and, when `online`, provision it and beat."""
        created = await self.service.create_bank(name, location, doors, actor=OPERATOR)
        self.tokens[created.uuid] = created.token
        if online:
            await self.provision(created.uuid)
            await self.heartbeat(created.uuid)
        return created.uuid

    async def provision(self, uuid: str) -> None:
        result = await self.service.devices.register(self.tokens[uuid], f"device-{uuid[-4:]}")
        assert result == "success", result

    async def heartbeat(self, uuid: str, uptime: float = 60.0) -> None:
        now = self.clock.now()
        beat = Heartbeat(data=HeartbeatData(timestamp=now, uptime_seconds=uptime))
        await self.service.devices.record_heartbeats([HeartbeatIn(uuid, beat, now)])

    async def relay(self) -> list[str]:
        """Publish everything due (as if the broker acked it); returns transaction ids."""
        sent = []
        for item in await self.service.devices.outbox_due():
            await self.service.devices.outbox_published(item)
            if item.transaction_id:
                sent.append(item.transaction_id)
        return sent

    async def answer(
        self,
        uuid: str,
        transaction_id: str,
        *,
        action: str = "open_compartment",
        result: str = "success",
        error_code: str | None = None,
        message: str | None = None,
        applied_config_hash: str | None = None,
    ) -> None:
        response = CommandResponse(
            action=action,  # type: ignore[arg-type]  # any string, as a device sends
            result=result,  # type: ignore[arg-type]  # any string, as a device sends
            transaction_id=transaction_id,
            timestamp=self.clock.now(),
            error_code=error_code,
            message=message,
            applied_config_hash=applied_config_hash,
        )
        outcome = await self.service.devices.record_response(uuid, response, response.to_bytes())
        assert outcome.disposition is Disposition.APPLIED, outcome

    async def apply_config(self, uuid: str, *, in_sync: bool = True) -> None:
        """Answer the bank's pending config push (with the desired hash, or a wrong one)."""
        bank = await self.service.get_bank(uuid)
        for txn in await self.service.list_transactions(uuid):
            if txn.action == "apply_config" and txn.status == "sent":
                applied = bank.desired_config_hash if in_sync else "f" * 64
                await self.answer(
                    uuid, txn.transaction_id, action="apply_config", applied_config_hash=applied
                )

    async def last_will(self, uuid: str) -> None:
        assert await self.service.devices.record_last_will(uuid)


@dataclass
class Broker:
    """A switchable broker connection for `status()`."""

    connected: bool = True
    detail: str = ""


class Toasts:
    """Every notification the app raised (a `run_test` message hook)."""

    def __init__(self) -> None:
        self.items: list[Notification] = []

    def __call__(self, message: object) -> None:
        if isinstance(message, Notify):
            self.items.append(message.notification)

    def texts(self) -> list[str]:
        return [f"{n.title}: {n.message}" for n in self.items]

    def matching(self, *words: str) -> list[Notification]:
        return [n for n in self.items if all(w in f"{n.title} {n.message}" for w in words)]


def plain(widget: Static) -> str:
    """The text a Static shows."""
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def type_text(pilot: Pilot[None], text: str) -> None:
    """Type `text` key by key."""
    keys = ["space" if ch == " " else ch for ch in text]
    await pilot.press(*keys)


async def ready(pilot: Pilot[None], app: LockerConsoleApp) -> None:
    """Wait until the console has read status and caught up with the stored events (what
    happens before that is history: shown, never toasted)."""
    await app_until(pilot, lambda: app.ready, "the console to catch up")


def cell(table: KeyedTable, key: str, column: str) -> str:
    return table.get_cell(key, column).plain


def modal_text(app: LockerConsoleApp) -> str:
    return "\n".join(plain(w) for w in app.screen.query(Static) if not w.has_class("hint"))


async def open_bank(pilot: Pilot[None], app: LockerConsoleApp, uuid: str) -> BankScreen:
    """From the fleet, put the cursor on `uuid` and press Enter."""
    table = app.screen.query_one(BankTable)
    await app_until(pilot, lambda: uuid in table.keys, "the bank in the fleet table")
    table.move_to_key(uuid)
    await pilot.press("enter")
    await app_until(pilot, lambda: isinstance(app.screen, BankScreen), "the bank screen")
    screen = app.screen
    assert isinstance(screen, BankScreen)
    await app_until(pilot, lambda: screen.data is not None, "the bank's data")
    return screen
