"""Drive a LockerService through a random but valid-looking sequence of operations.

Used by the rebuild tests: whatever happened, replaying the events must give back
exactly the read models the live projections produced.
"""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

from sqlalchemy import text

from backend.device_service import HeartbeatIn
from backend.domain.contract import (
    Command,
    CommandResponse,
    DeviceEvent,
    Heartbeat,
    HeartbeatData,
    parse,
)
from backend.domain.errors import DomainError
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService

OPS = (
    "create",
    "token",
    "register",
    "heartbeat",
    "open",
    "config",
    "relay",
    "answer",
    "duplicate",
    "door",
    "last_will",
    "tick",
    "revoke",
)

READ_MODELS = {
    "locker_banks": "uuid",
    "compartments": "bank_uuid, number",
    "command_transactions": "locker_uuid, transaction_id",
}


async def dump_read_models(service: LockerService) -> str:
    """The read models as one canonical JSON string (rows ordered by primary key)."""

    def work() -> str:
        out: dict[str, list[dict[str, Any]]] = {}
        with service.db.read_session() as session:
            for table, key in READ_MODELS.items():
                rows = session.execute(text(f"SELECT * FROM {table} ORDER BY {key}")).mappings()
                out[table] = [{k: str(v) for k, v in row.items()} for row in rows]
        return json.dumps(out, sort_keys=True)

    return await service.db.read(work)


class Scenario:
    """Applies operations chosen by the caller; remembers tokens and sent commands."""

    def __init__(self, service: LockerService, clock: FrozenClock, rng: random.Random) -> None:
        self.service = service
        self.devices = service.devices
        self.clock = clock
        self.rng = rng
        self.banks: list[str] = []
        self.tokens: dict[str, str] = {}
        self.sent: list[tuple[str, Command, bytes]] = []
        self.answered: list[tuple[str, CommandResponse]] = []

    def _bank(self) -> str | None:
        return self.rng.choice(self.banks) if self.banks else None

    async def run(self, ops: list[str]) -> None:
        for op in ops:
            # A refusal by a rule changes nothing, which is also a valid history.
            with contextlib.suppress(DomainError):
                await getattr(self, f"op_{op}")()

    async def op_create(self) -> None:
        created = await self.service.create_bank(
            f"bank {len(self.banks)}",
            "somewhere",
            self.rng.randint(1, 4),
            heartbeat_interval_seconds=5,
        )
        self.banks.append(created.uuid)
        self.tokens[created.uuid] = created.token

    async def op_token(self) -> None:
        if bank := self._bank():
            self.tokens[bank] = (await self.service.issue_token(bank)).token

    async def op_register(self) -> None:
        if bank := self._bank():
            await self.devices.register(self.tokens.get(bank, "x"), f"client-{bank[:8]}")

    async def op_heartbeat(self) -> None:
        if bank := self._bank():
            hb = Heartbeat(data=HeartbeatData(timestamp=self.clock.now(), uptime_seconds=1))
            await self.devices.record_heartbeats([HeartbeatIn(bank, hb, self.clock.now())])

    async def op_open(self) -> None:
        if bank := self._bank():
            await self.service.request_open(bank, self.rng.randint(1, 4), actor="op")

    async def op_config(self) -> None:
        if bank := self._bank():
            await self.service.request_config_push(bank, actor="op")

    async def op_relay(self) -> None:
        for item in await self.devices.outbox_due(10):
            if item.kind == "command" and item.expires_at and item.expires_at <= self.clock.now():
                await self.devices.outbox_expired(item)
                continue
            await self.devices.outbox_published(item)
            if item.kind == "command" and item.bank_uuid:
                self.sent.append((item.bank_uuid, parse(Command, item.payload), item.payload))

    async def op_answer(self) -> None:
        if not self.sent:
            return
        bank, command, _ = self.sent.pop(self.rng.randrange(len(self.sent)))
        result = self.rng.choice(["success", "success", "error"])
        response = CommandResponse(
            action=command.action,
            result=result,  # type: ignore[arg-type]  # any string, as a device sends
            transaction_id=command.transaction_id,
            timestamp=self.clock.now(),
            error_code="DOOR_JAMMED" if result == "error" else None,
            applied_config_hash=(
                command.config_data().config_hash if command.action == "apply_config" else None
            ),
        )
        await self.devices.record_response(bank, response, response.to_bytes())
        self.answered.append((bank, response))

    async def op_duplicate(self) -> None:
        if self.answered:
            bank, response = self.rng.choice(self.answered)
            await self.devices.record_response(bank, response, response.to_bytes())

    async def op_door(self) -> None:
        if bank := self._bank():
            event = DeviceEvent(
                event="door_state_changed",
                event_id=f"e{self.rng.randrange(10**9)}",
                timestamp=self.clock.now(),
                data={
                    "compartment_number": self.rng.randint(1, 4),
                    "state": self.rng.choice(["open", "closed"]),
                },
            )
            await self.devices.record_event(bank, event)

    async def op_last_will(self) -> None:
        if bank := self._bank():
            await self.devices.record_last_will(bank)

    async def op_tick(self) -> None:
        self.clock.advance(self.rng.choice([1, 11, 31, 400]))
        await self.devices.sweep()

    async def op_revoke(self) -> None:
        if self.rng.random() < 0.3 and (bank := self._bank()):
            await self.service.revoke(bank, reason="scenario", actor="op")
