"""The event store, projections and service against real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from backend.domain.errors import ConcurrencyConflict, NotFound, RuleViolation
from backend.domain.events import EventMetadata, LockerBankCameOnline
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from backend.store import event_store
from backend.store.batch_reads import preload
from backend.store.database import SQLITE_WAL_AUTOCHECKPOINT_PAGES, Database
from backend.store.tables import BankLivenessRow, LockerBankRow, OutboxRow, StoredEvent
from backend.store.unit_of_work import UnitOfWork
from tests.support.banks import beat, provisioned
from tests.support.scenario import OPS, Scenario, dump_read_models
from tests.support.settings import make_settings


async def all_events(service: LockerService) -> list[str]:
    return [e.event_type for e in await service.events_after(0, 10_000)]


async def test_create_list_show(service: LockerService) -> None:
    created = await service.create_bank("Hall A", " Berlin ", 3, heartbeat_interval_seconds=7)
    assert created.location == "Berlin" and len(created.token) >= 40
    banks = await service.list_banks()
    assert [b.uuid for b in banks] == [created.uuid]
    bank = await service.get_bank(created.uuid)
    assert bank.status == "unprovisioned"
    assert [c.number for c in bank.compartments] == [1, 2, 3]
    assert bank.heartbeat_interval_seconds == 7
    assert bank.token_expires_at == created.token_expires_at
    assert await all_events(service) == ["LockerBankCreated", "ProvisioningTokenIssued"]


async def test_token_is_stored_only_as_hmac(service: LockerService) -> None:
    created = await service.create_bank("Hall", "", 1)

    def rows() -> list[str]:
        with service.db.read_session() as session:
            return [r.payload for r in session.execute(select(StoredEvent)).scalars()]

    stored = " ".join(await service.db.read(rows))
    assert created.token not in stored
    assert await service.bank_by_token(created.token) == created.uuid
    reissued = await service.issue_token(created.uuid)
    assert await service.bank_by_token(created.token) is None
    assert await service.bank_by_token(reissued.token) == created.uuid


async def test_open_writes_command_to_outbox_in_the_same_transaction(
    service: LockerService,
) -> None:
    bank = await provisioned(service)
    txn = await service.request_open(bank, 2, actor="alice")
    assert txn.status == "pending" and txn.requested_by == "alice"

    def outbox_rows() -> list[OutboxRow]:
        with service.db.read_session() as session:
            return list(
                session.execute(select(OutboxRow).where(OutboxRow.kind == "command")).scalars()
            )

    (row,) = await service.db.read(outbox_rows)
    assert row.transaction_id == txn.transaction_id
    assert row.topic == f"locker/{bank}/command"
    assert row.expires_at == txn.expires_at


async def test_unknown_things_are_not_found_and_change_nothing(service: LockerService) -> None:
    bank = await provisioned(service)
    before = await all_events(service)
    with pytest.raises(NotFound):
        await service.get_bank("00000000-0000-4000-8000-000000000000")
    with pytest.raises(NotFound):
        await service.request_open("not-a-uuid", 1)
    with pytest.raises(NotFound, match="no compartment 99"):
        await service.request_open(bank, 99)
    with pytest.raises(NotFound, match="no compartment 0"):
        await service.request_open(bank, 0)
    assert await all_events(service) == before


async def test_stale_expected_version_is_a_conflict(service: LockerService) -> None:
    bank = await provisioned(service)
    meta = EventMetadata(actor="test")
    event = LockerBankCameOnline(occurred_at=service.clock.now())

    def append_stale() -> None:
        with service.db.write_session() as session:
            event_store.append(session, bank, 1, [event], meta)

    with pytest.raises(ConcurrencyConflict, match="expected 1"):
        await service.db.write(append_stale)


async def test_two_writers_racing_on_one_bank(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """Two services (two caches, two writer threads) on one database: no lost events."""
    one = LockerService(make_settings(tmp_path, database_url=db_url), clock=clock)
    two = LockerService(make_settings(tmp_path, database_url=db_url), clock=clock)
    await one.migrate()
    try:
        bank = await provisioned(one, compartments=20)
        await two.get_bank(bank)
        # Different compartments: all succeed (a conflict is retried with fresh state).
        results = await asyncio.gather(
            *(
                svc.request_open(bank, n)
                for n, svc in zip(range(1, 21), [one, two] * 10, strict=True)
            ),
            return_exceptions=True,
        )
        assert all(not isinstance(r, BaseException) for r in results), results
        # The same compartment from both sides: exactly one wins, the other is refused.
        await one.devices.sweep()
        clock.advance(1000)
        await one.devices.sweep()  # expire everything so compartment 1 is free again
        outcome = await asyncio.gather(
            one.request_open(bank, 1), two.request_open(bank, 1), return_exceptions=True
        )
        wins = [r for r in outcome if not isinstance(r, BaseException)]
        losses = [r for r in outcome if isinstance(r, BaseException)]
        assert len(wins) == 1 and len(losses) == 1
        assert isinstance(losses[0], RuleViolation)

        def versions() -> list[int]:
            with one.db.read_session() as session:
                stmt = (
                    select(StoredEvent.aggregate_version)
                    .where(StoredEvent.aggregate_uuid == bank)
                    .order_by(StoredEvent.id)
                )
                return list(session.execute(stmt).scalars())

        got = await one.db.read(versions)
        assert got == list(range(1, len(got) + 1))  # no gap, no duplicate
        requested = [e for e in await all_events(one) if e == "CompartmentOpeningRequested"]
        assert len(requested) == 21
    finally:
        one.close()
        two.close()


async def test_tail_returns_events_in_position_order(service: LockerService) -> None:
    await provisioned(service)
    events = await service.events_after(0)
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(positions) == len(set(positions))
    assert await service.events_after(positions[-1]) == []
    assert [e.position for e in await service.events_after(positions[0])] == positions[1:]
    # Hashes of secrets never leave the store through the public event view.
    assert all("password_sha256" not in e.payload and "token_hmac" not in e.payload for e in events)


async def test_rebuild_reproduces_read_models_after_a_long_random_history(
    service: LockerService, clock: FrozenClock
) -> None:
    rng = random.Random(20261129)
    scenario = Scenario(service, clock, rng)
    await scenario.run(["create"] * 3 + ["register"] * 3 + ["heartbeat"] * 3)
    await scenario.run([rng.choice(OPS) for _ in range(400)])
    before = await dump_read_models(service)
    count = await service.rebuild_projections()
    assert count == len(await service.events_after(0, 100_000))
    assert await dump_read_models(service) == before
    # And the rebuilt state keeps working.
    await scenario.run(["heartbeat", "open", "relay", "answer"])


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.sampled_from(OPS), min_size=10, max_size=60), seed=st.integers(0, 2**16))
def test_rebuild_is_identical_for_any_history(tmp_path: Path, ops: list[str], seed: int) -> None:
    async def run() -> None:
        clock = FrozenClock()
        path = tmp_path / f"h{seed}-{len(ops)}.db"
        path.unlink(missing_ok=True)
        svc = LockerService(make_settings(tmp_path, database_url=f"sqlite:///{path}"), clock=clock)
        await svc.migrate()
        try:
            scenario = Scenario(svc, clock, random.Random(seed))
            await scenario.run(["create", "register", "heartbeat", *ops])
            before = await dump_read_models(svc)
            await svc.rebuild_projections()
            assert await dump_read_models(svc) == before
        finally:
            svc.close()

    asyncio.run(run())


async def test_heartbeat_batch_brings_many_banks_online(
    service: LockerService, clock: FrozenClock
) -> None:
    """One batch with two beats each of 30 banks (as after a restart): each comes online
    once, gets one config push, and its liveness counts both beats."""
    banks = [await provisioned(service) for _ in range(30)]
    before = await service.events_after(0, 100_000)
    items = [beat(b, clock.now()) for b in banks] * 2
    assert await service.devices.record_heartbeats(items) == 60
    new = [e for e in await service.events_after(0, 100_000) if e not in before]
    kinds = [(e.aggregate_uuid, e.event_type) for e in new]
    for bank in banks:
        assert kinds.count((bank, "LockerBankCameOnline")) == 1
        assert kinds.count((bank, "ConfigApplyRequested")) == 1
        assert (await service.get_bank(bank)).status == "online"

    def liveness() -> dict[str, int]:
        with service.db.read_session() as session:
            return {
                r.bank_uuid: r.heartbeats
                for r in session.execute(select(BankLivenessRow)).scalars()
            }

    assert liveness() == {b: 2 for b in banks}
    # A second batch pushes no second config while the first is in flight.
    await service.devices.record_heartbeats([beat(b, clock.now()) for b in banks])
    after = [e.event_type for e in await service.events_after(0, 100_000)]
    assert after.count("ConfigApplyRequested") == 30


async def test_sweep_judges_silence_only_up_to_what_has_reached_us(
    service: LockerService, clock: FrozenClock
) -> None:
    """The receive side is behind the broker by `backlog` (the self-probe's round trip):
    heartbeats sent within it may still be queued for us, so a bank is called silent only
    if it sent nothing for three intervals before that."""
    bank = await provisioned(service)
    await service.devices.record_heartbeats([beat(bank, clock.now())])
    interval = (await service.get_bank(bank)).heartbeat_interval_seconds
    clock.advance(3 * interval + 4)
    counts = await service.devices.sweep(backlog=timedelta(seconds=5))
    assert counts["offline"] == 0
    assert (await service.get_bank(bank)).status == "online"
    counts = await service.devices.sweep(backlog=timedelta(seconds=3))
    assert counts["offline"] == 1
    assert (await service.get_bank(bank)).status == "offline"


async def test_a_sent_command_times_out_only_once_its_answer_cannot_be_in_the_backlog(
    service: LockerService, clock: FrozenClock
) -> None:
    bank = await provisioned(service)
    await service.devices.record_heartbeats([beat(bank, clock.now())])  # pushes its config
    for item in await service.devices.outbox_due(100):
        await service.devices.outbox_published(item)  # sent
    assert service.settings.config_ttl_seconds > service.settings.command_timeout + 5
    clock.advance(service.settings.command_timeout + 2)
    await service.devices.record_heartbeats([beat(bank, clock.now())])  # not silent
    counts = await service.devices.sweep(backlog=timedelta(seconds=3))
    assert (counts["timeout"], counts["expired"]) == (0, 0)  # its answer may still be queued
    counts = await service.devices.sweep(backlog=timedelta(seconds=1))
    assert (counts["timeout"], counts["expired"]) == (1, 0)
    assert (await service.get_bank(bank)).config_state == "unknown"


async def test_sweep_spares_a_bank_whose_heartbeat_is_still_queued(
    service: LockerService, clock: FrozenClock
) -> None:
    """Silent in the store but heard by the receive side a moment ago: not offline."""
    quiet, queued = await provisioned(service), await provisioned(service)
    await service.devices.record_heartbeats([beat(quiet, clock.now()), beat(queued, clock.now())])
    interval = (await service.get_bank(quiet)).heartbeat_interval_seconds
    clock.advance(3 * interval + 1)
    heard = {queued: clock.now()}
    counts = await service.devices.sweep(heard.get)
    assert counts["offline"] == 1
    assert (await service.get_bank(quiet)).status == "offline"
    assert (await service.get_bank(queued)).status == "online"
    clock.advance(3 * interval + 1)  # heard too long ago now
    assert (await service.devices.sweep(heard.get))["offline"] == 1
    assert (await service.get_bank(queued)).status == "offline"


async def test_preloading_needs_the_write_lock_and_keeps_rows_for_the_block(
    service: LockerService,
) -> None:
    """`uow.preloaded` refuses to read before the write lock (rows read earlier may be stale
    with several instances); inside `uow.locked()` it yields the rows, in the identity map."""
    created = await service.create_bank("Lobby", compartments=2)

    def unlocked(uow: UnitOfWork) -> None:
        with uow.preloaded(preload, LockerBankRow, [created.uuid]):
            pass

    with pytest.raises(RuntimeError, match="write lock"):
        await service.transact(unlocked)

    def locked(uow: UnitOfWork) -> tuple[list[str], bool]:
        with uow.locked(), uow.preloaded(preload, LockerBankRow, [created.uuid]) as rows:
            same = uow.session.get(LockerBankRow, created.uuid) is rows[0]
            return [r.uuid for r in rows], same

    assert await service.transact(locked) == ([created.uuid], True)


async def test_sqlite_connections_checkpoint_the_wal_at_the_configured_size(
    tmp_path: Path,
) -> None:
    """Issue 19: a response batch dirties more pages than SQLite's default checkpoint size,
    so every commit paid a checkpoint; the connections raise it (writer and readers)."""
    db = Database(f"sqlite:///{tmp_path / 'locker.db'}")
    try:
        for engine in (db.write_engine, db.read_engine):
            with engine.connect() as conn:
                pages = conn.execute(text("PRAGMA wal_autocheckpoint")).scalar()
                mode = conn.execute(text("PRAGMA journal_mode")).scalar()
            assert (pages, mode) == (SQLITE_WAL_AUTOCHECKPOINT_PAGES, "wal")
    finally:
        db.close()
