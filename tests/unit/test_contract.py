"""Contract models and topic parsing: round trips, rejections, and fuzzed payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.domain.contract import (
    MAX_PAYLOAD_BYTES,
    Command,
    CommandResponse,
    CompartmentMapping,
    ContractError,
    DeviceEvent,
    Heartbeat,
    RegisterRequest,
    config_hash,
    parse,
    parse_state,
)
from backend.domain.timeutil import iso, parse_iso
from backend.domain.topics import TopicError, TopicKind, parse_inbound

UUID = "3f2b8c1e-0d4a-4b6e-9c1f-2a3b4c5d6e7f"
MODELS = [RegisterRequest, Command, CommandResponse, DeviceEvent, Heartbeat]


def test_seed_examples_parse() -> None:
    response = parse(
        CommandResponse,
        b'{"type":"command_response","action":"open_compartment","result":"error",'
        b'"transaction_id":"xyz-789","timestamp":"2023-10-27T10:00:01Z",'
        b'"error_code":"DOOR_JAMMED","message":"jammed"}',
    )
    assert response.error_code == "DOOR_JAMMED"
    assert response.timestamp == datetime(2023, 10, 27, 10, 0, 1, tzinfo=UTC)
    event = parse(
        DeviceEvent,
        b'{"type":"event","event":"door_state_changed","event_id":"evt-111",'
        b'"timestamp":"2023-10-27T10:00:00Z","data":{"compartment_number":3,"state":"closed"}}',
    )
    assert event.door_data().state == "closed"
    assert event.dedup_key() == "evt-111"
    state = parse_state(
        b'{"type":"state","state":"connection_lost","status":"offline",'
        b'"timestamp":"2023-10-27T10:00:00Z","reason":"mqtt_last_will"}'
    )
    assert state.state == "connection_lost"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": NaN}', "NaN"),
        (b"{" * 5000 + b"}" * 5000, "not JSON"),
        (b'{"x":"' + b"a" * MAX_PAYLOAD_BYTES + b'"}', "exceeds"),
        (
            b'{"action":"fly","result":"success","transaction_id":"t","timestamp":"2023-10-27T10:00:00Z"}',
            "action",
        ),
        (
            b'{"action":"open_compartment","result":"success","transaction_id":7,"timestamp":"x"}',
            "transaction_id",
        ),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        parse(CommandResponse, raw)


def test_command_round_trip_and_wire_timestamps() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    command = Command(
        action="open_compartment",
        transaction_id="t",
        timestamp=now,
        expires_at=now,
        data={"compartment_number": 3},
    )
    wire = json.loads(command.to_bytes())
    assert wire["timestamp"] == "2026-01-01T12:00:00.123Z"
    assert "message_id" not in wire
    assert parse(Command, command.to_bytes()).open_data().compartment_number == 3


def test_config_hash_is_order_independent_and_interval_sensitive() -> None:
    a = [
        CompartmentMapping(id=2, slaveId=1, address=1),
        CompartmentMapping(id=1, slaveId=1, address=0),
    ]
    b = list(reversed(a))
    assert config_hash(a, 5) == config_hash(b, 5)
    assert config_hash(a, 5) != config_hash(a, 6)
    assert len(config_hash(a, 5)) == 64


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        (f"locker/{UUID}/response", TopicKind.RESPONSE),
        (f"locker/{UUID}/status", TopicKind.LEGACY_STATUS),
        (f"locker/{UUID}/event", TopicKind.EVENT),
        (f"locker/{UUID}/state", TopicKind.STATE),
        (f"locker/{UUID}/state/heartbeat", TopicKind.STATE_HEARTBEAT),
        (f"locker/{UUID}/state/compartments", TopicKind.STATE_COMPARTMENTS),
        (f"locker/{UUID}/state/connection", TopicKind.STATE_CONNECTION),
        ("locker/register/tok", TopicKind.REGISTER),
    ],
)
def test_inbound_topics(topic: str, kind: TopicKind) -> None:
    assert parse_inbound(topic).kind == kind


@pytest.mark.parametrize(
    "topic",
    [
        "locker/not-a-uuid/response",
        f"locker/{UUID}/command",
        "server/status",
        "locker/register/a/b",
        "x",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_inbound(topic)


def test_iso_round_trip() -> None:
    value = datetime(2026, 3, 4, 5, 6, 7, 8000, tzinfo=UTC)
    assert parse_iso(iso(value)) == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_contract_error(raw: bytes) -> None:
    for model in MODELS:
        try:
            parse(model, raw)
        except ContractError as exc:
            assert str(exc)


@settings(max_examples=200, deadline=None)
@given(
    value=st.dictionaries(
        st.sampled_from(
            ["action", "result", "transaction_id", "timestamp", "type", "data", "event", "state"]
        ),
        json_values,
    )
)
def test_arbitrary_json_objects_only_ever_raise_contract_error(value: dict[str, object]) -> None:
    raw = json.dumps(value).encode()
    for model in MODELS:
        try:
            parse(model, raw)
        except ContractError as exc:
            assert str(exc)
    try:
        parse_state(raw)
    except ContractError as exc:
        assert str(exc)
