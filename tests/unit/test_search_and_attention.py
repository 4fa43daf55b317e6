"""The filter syntax, natural order, and what needs attention (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from backend.search import Term, event_values, matches, natural_key, parse
from backend.views import BankView, EventView, TransactionView
from console.attention import Troubles, by_attention, jammed_doors, rank

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_parse_words_fields_negation_quotes() -> None:
    fields = ("status", "bank", "event")
    assert parse('offline status:on -bank:"main hall" "two words" -x 12:00', fields) == [
        Term("offline"),
        Term("on", "status"),
        Term("main hall", "bank", negate=True),
        Term("two words"),
        Term("x", negate=True),
        Term("12:00"),  # not a field: a plain word
    ]
    assert parse('"main ha', fields) == [Term("main ha")]  # unclosed quote: typing goes on
    assert parse("  - ", fields) == [Term("-")]
    assert parse("", fields) == []


def test_matches_full_values_case_insensitively() -> None:
    values = {
        "event": "LockerBankWentOffline",
        "bank": "Main hall 0000",
        "details": '{"note": "back door"}',
    }
    assert matches(values, parse("offline"))
    assert matches(values, parse("event:wentoffline -bank:depot"))
    assert not matches(values, parse("-offline"))
    assert not matches(values, parse("status:offline", ("status",)))  # no such field: no match
    fields = ("event", "bank", "details")
    assert matches(values, parse('"back door" note', fields))
    assert parse("note:x", fields) == [Term("note:x")]  # not a field: a plain word
    assert not matches(values, parse('"door back"'))


def test_event_values_hold_the_whole_payload_and_actor() -> None:
    values = event_values(
        "CommandFailed", "u-1", "Hall", {"action": "open_compartment", "error_code": "JAM"},
        {"actor": "device"}, 7,
    )  # fmt: skip
    assert values["event"] == "CommandFailed" and values["action"] == "open_compartment"
    assert "JAM" in values["details"] and values["actor"] == "device" and values["pos"] == "7"


def test_natural_order() -> None:
    names = ["Demo 100", "demo 9", "Demo 10", "Demo 11", "Depot", "Demo"]
    assert sorted(names, key=natural_key) == [
        "Demo",
        "demo 9",
        "Demo 10",
        "Demo 11",
        "Demo 100",
        "Depot",
    ]


def bank(uuid: str, name: str, **fields: Any) -> BankView:
    base: dict[str, Any] = {
        "uuid": uuid,
        "name": name,
        "location": "",
        "status": "online",
        "heartbeat_interval_seconds": 30,
        "config_state": "in_sync",
        "desired_config_hash": "h",
        "created_at": T0,
        "updated_at": T0,
    }
    return BankView.model_validate({**base, **fields})


def event(position: int, kind: str, uuid: str, **payload: Any) -> EventView:
    return EventView(
        position=position,
        event_type=kind,
        aggregate_uuid=uuid,
        aggregate_version=position,
        payload=payload,
        metadata={},
        created_at=T0,
    )


def test_attention_offline_jammed_drifted_failing_then_names() -> None:
    banks = [
        bank("a", "Ok 10"),
        bank("b", "Ok 9", pending_commands=3),  # pending alone does not rank
        bank("c", "Drifted", config_state="drifted"),
        bank("d", "Off", status="offline"),
        bank("e", "Jammed"),
        bank("f", "Failing"),
        bank("g", "New", status="unprovisioned"),
    ]
    troubles = Troubles.from_events(
        [
            event(1, "CompartmentOpeningRequested", "e", transaction_id="t1", compartment_number=4),
            event(2, "CommandFailed", "e", transaction_id="t1", error_code="DOOR_JAMMED"),
            event(3, "CommandTimedOut", "f", transaction_id="t2"),
            event(4, "CommandTimedOut", "a", transaction_id="t3"),
            event(5, "ConfigApplied", "a", transaction_id="t4"),  # a success clears failing
        ]
    )
    assert troubles.jammed == {"e": {4}} and set(troubles.failing) == {"e", "f"}
    order = [b.uuid for b in by_attention(banks, troubles)]
    assert order == ["d", "e", "c", "f", "g", "b", "a"]  # "Ok 9" before "Ok 10"
    assert rank(banks[0], troubles) > rank(banks[5], troubles)
    # the door opens: no longer jammed; a later feed changes the rank
    assert troubles.feed([event(6, "CompartmentOpened", "e", compartment_number=4)])
    assert troubles.jammed == {"e": set()} and "e" not in troubles.failing
    assert not troubles.feed([event(6, "CommandTimedOut", "a")])  # already seen: skipped


def txn(tid: str, number: int, status: str, at: int, code: str | None = None) -> TransactionView:
    return TransactionView(
        transaction_id=tid,
        bank_uuid="e",
        action="open_compartment",
        compartment_number=number,
        status=status,
        error_code=code,
        requested_by="alice",
        requested_at=T0 + timedelta(seconds=at),
        expires_at=T0 + timedelta(seconds=at + 60),
    )


def test_jammed_doors_from_the_latest_finished_open_of_each_door() -> None:
    transactions = [
        txn("1", 1, "error", 1, "DOOR_JAMMED"),
        txn("2", 1, "success", 2),  # opened since: not jammed
        txn("3", 2, "success", 1),
        txn("4", 2, "error", 3, "DOOR_JAMMED"),
        txn("5", 3, "error", 1, "NO_POWER"),
        txn("6", 2, "pending", 9),  # not finished: does not change the answer
    ]
    assert jammed_doors(transactions) == {2}
