"""The dialect in the store: existing banks become `seed` by migration and by replay;
documented device events and door snapshots are recorded as DESIGN 3.1 / 7 say."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from backend.domain.contract import DeviceEvent
from backend.domain.events import LockerBankCreated, event_from_payload
from backend.domain.outcomes import Outcome
from backend.service import LockerService
from backend.store.migrate import upgrade
from tests.support.http_api import provision


def test_banks_that_existed_before_dialects_migrate_to_seed(tmp_path: Path) -> None:
    """A fresh database at 0002 (before dialects) with a bank in it, then upgraded."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO locker_banks (uuid, name, location, status, "
                    "heartbeat_interval_seconds, desired_config_hash, config_state, "
                    "created_at, updated_at, version) VALUES ('old-bank', 'Old', '', "
                    "'online', 30, 'h', 'in_sync', :t, :t, 3)"
                ),
                {"t": datetime(2026, 11, 1)},
            )
        report = upgrade(engine)
        assert "0003" in report.applied
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT dialect, dialect_setting FROM locker_banks WHERE uuid = 'old-bank'")
            ).one()
        assert tuple(row) == ("seed", "seed")
    finally:
        engine.dispose()


def test_an_old_creation_event_replays_as_seed() -> None:
    stored = {
        "occurred_at": "2026-11-01T10:00:00.000Z",
        "name": "Old",
        "location": "",
        "heartbeat_interval_seconds": 30,
        "compartments": [{"number": 1, "slave_id": 1, "address": 0}],
    }
    event = event_from_payload("LockerBankCreated", stored)
    assert isinstance(event, LockerBankCreated) and event.dialect == "seed"


async def test_a_documented_future_event_is_recorded(service: LockerService) -> None:
    bank = (await provision(service)).uuid
    event = DeviceEvent(
        message_id="m-1",
        event="tamper_detected",
        timestamp=datetime(2026, 1, 1, 12, tzinfo=UTC),
        data={"sensor": "frame"},
    )
    assert await service.devices.record_event(bank, event) == Outcome.applied()
    assert await service.devices.record_event(bank, event) == Outcome.duplicate()  # its message_id
    last = (await service.events_after(0))[-1]
    assert last.event_type == "DeviceEventRecorded"
    assert last.payload["event"] == "tamper_detected" and last.payload["data"] == {
        "sensor": "frame"
    }


async def test_a_door_snapshot_records_unknown_and_refuses_a_foreign_number_alone(
    service: LockerService,
) -> None:
    bank = (await provision(service, compartments=3)).uuid
    unknown = await service.devices.record_door_snapshot(
        bank, [(1, "open"), (2, "unknown"), (7, "open"), (3, "closed")]
    )
    assert unknown == [7]
    doors = {c.number: c.door_state for c in (await service.get_bank(bank)).compartments}
    assert doors == {1: "open", 2: "unknown", 3: "closed"}
