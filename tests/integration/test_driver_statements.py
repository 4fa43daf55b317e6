"""Rows written through the driver with tuples (`backend.store.driver_statements`, issue 19)
store what the same Core statement stores through `Session.execute` with dicts, on SQLite
and PostgreSQL; and the set-wise answers find their tracker rows by transaction id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, text, update

from backend.service import LockerService
from backend.store import answers
from backend.store.driver_statements import DriverStatement, stamps
from backend.store.tables import CommandTransactionRow, CompartmentRow, table_of

COMPARTMENTS = table_of(CompartmentRow)
OPENED = (
    update(COMPARTMENTS)
    .where(COMPARTMENTS.c.bank_uuid == bindparam("k_bank"))
    .where(COMPARTMENTS.c.number == bindparam("k_number"))
    .values(door_state=bindparam("v_state"), last_opened_at=bindparam("v_at"))
)


def stored(service: LockerService, bank: str) -> list[tuple[object, ...]]:
    """The rows as the database holds them (on SQLite the datetime text itself)."""
    with service.db.read_session() as session:
        return [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT number, door_state, last_opened_at FROM compartments "
                    "WHERE bank_uuid = :b ORDER BY number"
                ),
                {"b": bank},
            )
        ]


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 1, 1, 12, 0, 33, tzinfo=UTC),
        datetime(2026, 1, 1, 12, 0, 33, 120000, tzinfo=UTC),
        datetime(2026, 1, 1, 14, 0, 33, 5, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 1, 12, 0, 33),  # naive: taken as UTC
    ],
)
async def test_driver_rows_store_what_core_stores(service: LockerService, when: datetime) -> None:
    bank = (await service.create_bank("Hall", "", 4)).uuid
    in_order = DriverStatement(OPENED, ("v_state", "v_at", "k_bank", "k_number"))
    shuffled = DriverStatement(OPENED, ("k_number", "k_bank", "v_at", "v_state"))

    def write() -> None:
        with service.db.write_session() as session:
            session.execute(
                OPENED, [{"k_bank": bank, "k_number": 1, "v_state": "open", "v_at": when}]
            )
            stamp = stamps(session)
            in_order.executemany(session, [("open", stamp(when), bank, 2)])
            shuffled.executemany(session, [(3, bank, stamp(when), "open")])
            in_order.executemany(session, [])  # nothing to write: no statement

    await service.db.write(write)
    rows = await service.db.read(stored, service, bank)
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[0][1:] == rows[1][1:] == rows[2][1:] == ("open", rows[0][2])
    assert rows[3][1] != "open" and rows[3][2] is None  # not in any batch


def test_a_driver_statement_must_bind_the_names_it_is_given() -> None:
    from sqlalchemy.dialects import sqlite

    with pytest.raises(ValueError, match="binds"):
        DriverStatement(OPENED, ("v_state", "k_bank", "k_number")).compiled(sqlite.dialect())


async def test_trackers_are_found_by_their_pair_when_a_transaction_id_repeats(
    service: LockerService,
) -> None:
    """Two banks' commands with one transaction id: the batch asks for one bank's."""
    a = (await service.create_bank("A", "", 2)).uuid
    b = (await service.create_bank("B", "", 2)).uuid
    now = service.clock.now()

    def seed() -> None:
        with service.db.write_session() as session:
            for bank, status in ((a, "sent"), (b, "pending")):
                session.add(
                    CommandTransactionRow(
                        locker_uuid=bank,
                        transaction_id="same",
                        action="open_compartment",
                        compartment_number=1,
                        status=status,
                        requested_by="op",
                        requested_at=now,
                        expires_at=now,
                    )
                )

    def load(keys: set[tuple[str, str]]) -> dict[tuple[str, str], answers.Tracker]:
        with service.db.read_session() as session:
            return answers.load(session, keys)

    await service.db.write(seed)
    found = await service.db.read(load, {(a, "same"), (a, "other")})
    assert list(found) == [(a, "same")]
    assert found[(a, "same")].status == "sent"
    both = await service.db.read(load, {(a, "same"), (b, "same")})
    assert {k: t.status for k, t in both.items()} == {(a, "same"): "sent", (b, "same"): "pending"}
