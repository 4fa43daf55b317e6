"""The store's boundary (issue 20, point 6): SQLAlchemy's errors leave the store as its own
(`backend.store.errors`), on SQLite and PostgreSQL, with the original as the cause."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from backend.domain.errors import ConcurrencyConflict
from backend.domain.events import EventMetadata, LockerBankCameOnline
from backend.service import LockerService
from backend.store import event_store
from backend.store.errors import AppendConflict, StatementRefused, StoreError, StoreUnavailable


async def _bank(service: LockerService) -> str:
    return (await service.create_bank("Hall", "Berlin", 2)).uuid


async def test_a_clash_on_the_event_store_keys_is_an_append_conflict(
    service: LockerService,
) -> None:
    """Two rows for one (bank, version), written without the version check (as the unit
    of work does): the database's unique key refuses the second, the store says why."""
    bank = await _bank(service)
    meta = EventMetadata(actor="test")
    event = LockerBankCameOnline(occurred_at=service.clock.now())

    def clash() -> None:
        with service.db.write_session() as session:
            version = event_store.current_version(session, bank)
            rows: list[event_store.EventRow] = []
            event_store.append(
                session, bank, version - 1, [event], meta, verify=False, pending=rows
            )
            event_store.write_rows(session, rows)

    with pytest.raises(AppendConflict) as caught:
        await service.db.write(clash)
    assert isinstance(caught.value, ConcurrencyConflict)  # reported as a 409 upstairs
    before = [e.event_type for e in await service.events_after(0, 100)]
    assert "LockerBankCameOnline" not in before  # nothing of it was stored


async def test_a_flush_clash_inside_a_session_is_an_append_conflict(
    service: LockerService,
) -> None:
    """The clash surfaced by the session's own flush (not by `write_rows`) is mapped at the
    boundary too: nobody above the store matches `stored_events` in a message."""
    bank = await _bank(service)

    def clash() -> None:
        with service.db.write_session() as session:
            version = event_store.current_version(session, bank)
            position = event_store.last_position(session)
            session.execute(
                text(
                    "INSERT INTO stored_events (id, aggregate_uuid, aggregate_version, "
                    "event_type, event_version, payload, metadata, created_at) VALUES "
                    "(:id, :bank, :version, 'LockerBankCameOnline', 1, '{}', '{}', "
                    "CURRENT_TIMESTAMP)"
                ),
                {"id": position + 1, "bank": bank, "version": version},
            )

    with pytest.raises(AppendConflict) as caught:
        await service.db.write(clash)
    assert isinstance(caught.value.__cause__, IntegrityError)


async def test_a_missing_table_is_refused_or_unavailable_never_sqlalchemy(
    service: LockerService,
) -> None:
    def read_missing() -> None:
        with service.db.read_session() as session:
            session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(StoreError) as caught:
        await service.db.read(read_missing)
    cause = caught.value.__cause__
    assert isinstance(cause, SQLAlchemyError)
    # SQLite calls it an OperationalError, PostgreSQL a ProgrammingError (UndefinedTable)
    expected = StoreUnavailable if isinstance(cause, OperationalError) else StatementRefused
    assert isinstance(cause, OperationalError | ProgrammingError)
    assert type(caught.value) is expected
    assert caught.value.kind in ("OperationalError", "UndefinedTable")
    assert "SELECT" not in str(caught.value)  # the first line only: no SQL


async def test_other_database_errors_are_store_errors(service: LockerService) -> None:
    """A read model's own constraint (not the event store's): a plain StoreError."""

    def duplicate_token() -> None:
        with service.db.write_session() as session:
            for _ in range(2):
                session.execute(
                    text(
                        "INSERT INTO api_tokens (name, role, token_sha256, created_at) "
                        "VALUES ('same', 'app', 'digest', CURRENT_TIMESTAMP)"
                    )
                )

    with pytest.raises(StoreError) as caught:
        await service.db.write(duplicate_token)
    assert type(caught.value) is StoreError and not isinstance(caught.value, AppendConflict)
    assert isinstance(caught.value.__cause__, IntegrityError)

    def count() -> int:
        with service.db.read_session() as session:
            return int(session.execute(text("SELECT count(*) FROM api_tokens")).scalar_one())

    assert await service.db.read(count) == 0  # the whole transaction was rolled back
