"""Issue 19: a batch of command responses applied set-wise (SQLAlchemy Core,
`backend.store.answers`) leaves exactly the rows, events, alerts and outcomes the
per-response ORM way leaves, for a batch that mixes every kind of answer.

The same history is built twice, with the same ids, secrets and frozen clock, on a
clean database each time (SQLite: two files; PostgreSQL: the run's database emptied in
between); the one batch is then applied one way or the other and everything compared.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from backend.domain.contract import CommandResponse
from backend.domain.outcomes import Disposition, Outcome
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from backend.store.unit_of_work import UnitOfWork
from tests.support.banks import beat
from tests.support.databases import truncate_all
from tests.support.settings import make_settings

Items = list[tuple[str, CommandResponse, bytes]]
Apply = Callable[[LockerService, Items], Callable[[UnitOfWork], list[Outcome] | None]]

TABLES = {
    "locker_banks": "uuid",
    "compartments": "bank_uuid, number",
    "command_transactions": "locker_uuid, transaction_id",
    "alerts": "id",
    "stored_events": "id",
}


def response(action: str, txn: str, result: str = "success", **extra: object) -> CommandResponse:
    return CommandResponse.model_validate(
        {
            "type": "command_response",
            "action": action,
            "result": result,
            "transaction_id": txn,
            "timestamp": "2026-01-01T12:00:00Z",
            **extra,
        }
    )


def item(bank: str, answer: CommandResponse) -> tuple[str, CommandResponse, bytes]:
    return (bank, answer, answer.to_bytes())


async def publish_all(service: LockerService) -> None:
    for due in await service.devices.outbox_due(100):
        await service.devices.outbox_published(due)


async def history(service: LockerService, clock: FrozenClock) -> Items:
    """Three online banks with commands in every state an answer can meet; the batch."""
    seed_a = await service.create_bank("A", "Hall", 4)
    seed_b = await service.create_bank("B", "Hall", 4)
    field = await service.create_bank("U", "Depot", 4, dialect="openlocker", actor="op")
    for created in (seed_a, seed_b, field):
        assert await service.devices.register(created.token, f"client-{created.uuid}") == "success"
    a, b, u = seed_a.uuid, seed_b.uuid, field.uuid
    await service.devices.record_heartbeats([beat(x, clock.now()) for x in (a, b, u)])
    await publish_all(service)  # the config pushes of coming online: sent
    expired = await service.request_open(b, 2, actor="op")
    lost = await service.request_open(u, 1, actor="op")
    await publish_all(service)
    await service.devices.recover_after_restart()  # u's sent commands are now in doubt
    clock.advance(service.settings.open_ttl_seconds)
    await service.devices.sweep()  # expired, unknown; the configs time out
    await service.devices.record_heartbeats([beat(x, clock.now()) for x in (a, b, u)])
    opened = await service.request_open(a, 1, actor="op")
    jammed = await service.request_open(a, 2, actor="op")
    answered = await service.request_open(b, 1, actor="op")
    twice = await service.request_open(b, 3, actor="op")
    push = await service.request_config_push(b, actor="op")
    await publish_all(service)
    clock.advance(2)
    timed_out = {
        t.bank_uuid: t.transaction_id
        for t in await service.list_transactions(a)
        if t.status == "timeout"
    }
    assert (await service.get_transaction(expired.transaction_id)).status == "expired"
    assert (await service.get_transaction(lost.transaction_id)).status == "unknown"
    assert timed_out, "the config pushed when bank A came online timed out"
    early = response("open_compartment", answered.transaction_id)
    await service.devices.record_response(b, early, early.to_bytes())
    clock.advance(1)
    return [
        item(a, response("open_compartment", opened.transaction_id, message="ok")),
        item(a, response("open_compartment", jammed.transaction_id, "error", error_code="JAM")),
        item(b, response("open_compartment", answered.transaction_id)),  # a duplicate
        item(b, response("open_compartment", expired.transaction_id)),  # late, after expiry
        item(u, response("open_compartment", lost.transaction_id)),  # late, was unknown
        item(a, response("apply_config", timed_out[a], applied_config_hash="ab" * 32)),
        item(b, response("apply_config", push.transaction_id, "error", error_code="BAD")),
        item(b, response("open_compartment", twice.transaction_id)),
        item(b, response("open_compartment", twice.transaction_id)),  # again in the batch
        item(a, response("open_compartment", "no-such-transaction")),  # unknown
        item(b, response("open_compartment", opened.transaction_id)),  # the wrong bank
        item(a, response("apply_config", jammed.transaction_id)),  # the wrong action
    ]


def set_wise(service: LockerService, items: Items) -> Callable[[UnitOfWork], list[Outcome] | None]:
    return lambda uow: service.devices.input._responses_set_wise(uow, items)


def one_by_one(service: LockerService, items: Items) -> Callable[[UnitOfWork], list[Outcome]]:
    return lambda uow: service.devices.input._responses_one_by_one(uow, items)


async def run(
    tmp_path: Path, url: str, apply: Apply
) -> tuple[list[Outcome] | None, dict[str, Any], list[str]]:
    """The history on a clean database, then the batch applied by `apply`: the outcomes,
    every row of the tables an answer touches, and the event types the listeners got."""
    ids = itertools.count(1)
    secrets = itertools.count(1)
    clock = FrozenClock()
    service = LockerService(
        make_settings(tmp_path, database_url=url),
        clock=clock,
        new_id=lambda: str(uuid.UUID(int=next(ids))),
        new_secret=lambda: f"secret-{next(secrets)}",
    )
    await service.migrate()
    heard: list[str] = []
    try:
        items = await history(service, clock)
        service.subscribe(lambda recorded: heard.extend(r.event_type for r in recorded))
        outcomes = await service.transact(apply(service, items))

        def dump() -> dict[str, Any]:
            with service.db.read_session() as session:
                return {
                    table: [
                        {k: str(v) for k, v in row.items()}
                        for row in session.execute(
                            text(f"SELECT * FROM {table} ORDER BY {key}")
                        ).mappings()
                    ]
                    for table, key in TABLES.items()
                }

        return outcomes, await service.db.read(dump), heard
    finally:
        service.close()


async def test_a_mixed_batch_set_wise_leaves_what_the_per_response_way_leaves(
    tmp_path: Path, db_url: str
) -> None:
    core = await run(tmp_path, db_url, set_wise)
    if db_url.startswith("sqlite"):
        orm_url = f"sqlite:///{tmp_path / 'one-by-one.db'}"
    else:
        truncate_all(db_url)
        orm_url = db_url
    orm = await run(tmp_path, orm_url, one_by_one)
    outcomes, rows, heard = core
    assert outcomes is not None, "the batch took the set-wise way"
    assert [(o.disposition, o.late) for o in outcomes] == [
        (Disposition.APPLIED, False),
        (Disposition.APPLIED, False),
        (Disposition.DUPLICATE, False),
        (Disposition.APPLIED, True),
        (Disposition.APPLIED, True),
        (Disposition.APPLIED, True),
        (Disposition.APPLIED, False),
        (Disposition.APPLIED, False),
        (Disposition.DUPLICATE, False),
        (Disposition.REJECTED, False),
        (Disposition.REJECTED, False),
        (Disposition.REJECTED, False),
    ]
    statuses = sorted(r["status"] for r in rows["command_transactions"])
    assert statuses.count("late") == 2 and "error" in statuses
    kinds = sorted(r["kind"] for r in rows["alerts"])
    assert kinds.count("late_execution") == 2 and kinds.count("command_failed") == 2, kinds
    assert heard == [
        "CompartmentOpened",
        "CommandFailed",
        "CompartmentOpened",
        "CompartmentOpened",
        "ConfigApplied",
        "CommandFailed",
        "CompartmentOpened",
    ]
    assert outcomes == orm[0]
    for table in TABLES:
        assert json.dumps(rows[table], indent=1) == json.dumps(orm[1][table], indent=1), table
    assert heard == orm[2]
