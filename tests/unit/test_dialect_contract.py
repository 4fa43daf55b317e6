"""Contract tests against contracts we did not write (DESIGN 3.1, issue 13).

openlocker: every message the backend publishes to an openlocker bank validates against
the upstream JSON schemas (`../shared/peer/upstream-docs/asyncapi/schemas`, format
checked); every device-to-backend example is accepted by the listener on its `mqtt.yaml`
channel. seed: the JSON examples written in the seed's section 4.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.domain.bank import LockerBank
from backend.domain.contract import ContractError
from backend.domain.dialect import (
    config_hash_for,
    dialect_of_registration,
    effective_dialect,
    openlocker_config_hash,
    replays_stored_answers,
)
from backend.domain.errors import InvalidInput, RuleViolation
from backend.domain.events import (
    CompartmentOpeningRequested,
    CompartmentSpec,
    ConfigApplyRequested,
    LockerBankProvisioned,
)
from backend.domain.messages import (
    OutboundMessage,
    command_message,
    provisioning_error,
    provisioning_success,
    restamp,
)
from backend.domain.topics import parse_inbound
from backend.mqtt.handlers import (
    Beat,
    DoorSnapshot,
    Event,
    LastWill,
    Registration,
    Response,
    validate_inbound,
)
from backend.mqtt.inbound import Inbound
from tests.support.peer_contract import (
    BACKEND_RECEIVED_BY,
    BACKEND_SENDS,
    DEVICE_SENDS,
    EXAMPLES,
    SCHEMAS,
    example,
    matching_messages,
    schema_errors,
    seed_examples,
    seed_inline_payloads,
    topic_for,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BANK = "0b5e7d1c-3a52-4d6e-9f0a-1c2d3e4f5a6b"
SPECS = [
    CompartmentSpec(number=2, slave_id=1, address=1),
    CompartmentSpec(number=1, slave_id=1, address=0),
    CompartmentSpec(number=3, slave_id=2, address=7),
]

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="../shared/peer is not there")


def _open(tx: str = "tx-open-1") -> CompartmentOpeningRequested:
    return CompartmentOpeningRequested(
        occurred_at=NOW,
        transaction_id=tx,
        compartment_number=3,
        requested_by="alice",
        expires_at=NOW + timedelta(seconds=30),
    )


def _config(dialect: str) -> ConfigApplyRequested:
    triples = [(c.number, c.slave_id, c.address) for c in SPECS]
    return ConfigApplyRequested(
        occurred_at=NOW,
        transaction_id="tx-cfg-1",
        requested_by="system",
        expires_at=NOW + timedelta(hours=1),
        config_hash=config_hash_for(dialect, triples, 15),
        heartbeat_interval_seconds=15,
        compartments=SPECS,
    )


def _payload(message: OutboundMessage | None) -> dict[str, Any]:
    assert message is not None
    return json.loads(message.payload)


def _schema_of(example_name: str, operations: tuple[str, ...]) -> Any:
    """The schema the AsyncAPI gives the message an upstream example is an instance of."""
    matches = matching_messages(example(example_name), operations)
    assert matches, f"{example_name} matches no message of {operations}"
    return matches[-1].schema  # the most specific (apply_config success before command)


def _item(topic: str, payload: dict[str, Any] | bytes, retained: bool = False) -> Inbound:
    parsed = parse_inbound(topic)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Inbound(topic, parsed.kind, parsed.key, raw, retained, NOW)


# --- openlocker: what the backend sends --------------------------------------------------


def test_open_command_to_an_openlocker_bank_passes_the_upstream_schema() -> None:
    payload = _payload(command_message(BANK, _open(), "openlocker"))
    schema = _schema_of("command-open-compartment.json", BACKEND_SENDS)
    assert schema_errors(schema, payload) == []
    assert payload["message_id"] and payload["transaction_id"] == "tx-open-1"
    assert payload["data"] == {"compartment_number": 3}


def test_apply_config_to_an_openlocker_bank_passes_the_schema_with_the_clients_hash() -> None:
    payload = _payload(command_message(BANK, _config("openlocker"), "openlocker"))
    schema = _schema_of("command-apply-config.json", BACKEND_SENDS)
    assert schema_errors(schema, payload) == []
    compartments = payload["data"]["compartments"]
    assert compartments == [
        {"compartment_number": 1, "slaveId": 1, "address": 0},
        {"compartment_number": 2, "slaveId": 1, "address": 1},
        {"compartment_number": 3, "slaveId": 2, "address": 7},
    ]
    # the client's way: sha256 of JSON.stringify of the list sorted by number (no spaces)
    stringified = (
        '[{"compartment_number":1,"slaveId":1,"address":0},'
        '{"compartment_number":2,"slaveId":1,"address":1},'
        '{"compartment_number":3,"slaveId":2,"address":7}]'
    )
    assert payload["data"]["config_hash"] == hashlib.sha256(stringified.encode()).hexdigest()


def test_every_publish_has_its_own_message_id_and_a_reask_keeps_the_transaction() -> None:
    first = command_message(BANK, _open(), "openlocker")
    second = command_message(BANK, _open("tx-open-2"), "openlocker")
    assert first is not None and second is not None
    again = json.loads(restamp(first.payload))
    one, two = json.loads(first.payload), json.loads(second.payload)
    assert len({one["message_id"], two["message_id"], again["message_id"]}) == 3
    assert again["transaction_id"] == one["transaction_id"]
    assert schema_errors(SCHEMAS / "payloads" / "command-open-compartment.json", again) == []


@pytest.mark.parametrize(
    ("example_name", "build"),
    [
        ("provisioning-success.json", lambda: provisioning_success("cid", BANK, "pw-1", NOW)),
        ("provisioning-error.json", lambda: provisioning_error("cid", NOW)),
    ],
)
def test_provisioning_replies_pass_the_schema_of_the_upstream_example(
    example_name: str, build: Any
) -> None:
    """Always with message_id and timestamp, whatever the dialect (harmless to seed)."""
    schema = _schema_of(example_name, BACKEND_RECEIVED_BY)
    payload = _payload(build())
    assert schema_errors(schema, payload) == []
    assert payload["message_id"] and payload["timestamp"].endswith("Z")


def test_the_backend_to_device_examples_name_the_schemas_our_output_passes() -> None:
    """Each backend-to-device example, located in mqtt.yaml by its schema, has a
    counterpart in our output for an openlocker bank that passes that same schema."""
    ours = {
        "openCompartmentCommand": _payload(command_message(BANK, _open(), "openlocker")),
        "applyConfigCommand": _payload(command_message(BANK, _config("openlocker"), "openlocker")),
        "provisioningSuccessReply": _payload(provisioning_success("c", BANK, "p", NOW)),
        "provisioningErrorReply": _payload(provisioning_error("c", NOW)),
    }
    checked = set()
    for path in sorted(EXAMPLES.glob("*.json")):
        for message in matching_messages(example(path.name), BACKEND_SENDS + BACKEND_RECEIVED_BY):
            assert schema_errors(message.schema, ours[message.name]) == [], message.name
            checked.add(message.name)
    assert checked == set(ours)


def test_our_seed_command_fails_the_upstream_schema() -> None:
    """The check has teeth: the seed form (no message_id, `id` keys) is refused."""
    seed = _payload(command_message(BANK, _config("seed"), "seed"))
    assert schema_errors(SCHEMAS / "payloads" / "command-apply-config.json", seed)


# --- openlocker: what the backend accepts --------------------------------------------------


@pytest.mark.parametrize("example_name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_every_device_to_backend_example_is_accepted_on_its_channel(example_name: str) -> None:
    messages = matching_messages(example(example_name), DEVICE_SENDS)
    if not messages:
        assert matching_messages(example(example_name), BACKEND_SENDS + BACKEND_RECEIVED_BY)
        return  # a backend-to-device example (checked above)
    expected = {
        "provisioningRequest": Registration,
        "commandSuccessResponse": Response,
        "applyConfigSuccessResponse": Response,
        "commandErrorResponse": Response,
        "heartbeatState": Beat,
        "snapshotState": DoorSnapshot,
        "connectionLostState": LastWill,
        "deviceEvent": Event,
    }
    for message in messages:
        work = validate_inbound(_item(topic_for(message.address, BANK), example(example_name)))
        assert isinstance(work, expected[message.name]), (example_name, message.name, work)
        if isinstance(work, Registration):
            assert work.dialect == "openlocker"
        if isinstance(work, Beat):
            assert work.heartbeat.heartbeat.data.uptime_seconds == 86400
        if isinstance(work, DoorSnapshot):
            assert work.doors == [(1, "closed"), (2, "open")] and work.refused == []
        if isinstance(work, Response) and message.name == "applyConfigSuccessResponse":
            assert work.response.message == "Config applied."


def test_a_documented_future_event_is_accepted_and_an_unknown_one_refused() -> None:
    tamper = {
        "message_id": "m-1",
        "event": "tamper_detected",
        "timestamp": "2026-04-14T19:33:00Z",
        "data": {"sensor": "door-frame"},
    }
    assert schema_errors(SCHEMAS / "messages" / "event.json", tamper) == []
    work = validate_inbound(_item(f"locker/{BANK}/event", tamper))
    assert isinstance(work, Event) and work.event.event == "tamper_detected"
    with pytest.raises(ContractError, match="unknown event"):
        validate_inbound(_item(f"locker/{BANK}/event", {**tamper, "event": "made_up"}))


def test_a_snapshot_with_unknown_doors_and_one_bad_entry_keeps_the_good_ones() -> None:
    snapshot = {
        "message_id": "m-2",
        "timestamp": "2026-04-14T19:33:05Z",
        "compartments": [
            {"compartment_number": 1, "door_state": "unknown"},
            {"compartment_number": 2, "door_state": "ajar"},
            {"compartment_number": 3, "door_state": "open"},
        ],
    }
    work = validate_inbound(_item(f"locker/{BANK}/state/compartments", snapshot))
    assert isinstance(work, DoorSnapshot)
    assert work.doors == [(1, "unknown"), (3, "open")]
    assert len(work.refused) == 1 and "compartments.1" in work.refused[0]
    with pytest.raises(ContractError):  # nothing good at all: the message is refused
        validate_inbound(
            _item(f"locker/{BANK}/state/compartments", {**snapshot, "compartments": [7]})
        )


@pytest.mark.parametrize("suffix", ["state", "state/heartbeat"])
def test_both_heartbeat_forms_on_both_topics(suffix: str) -> None:
    flat = {"message_id": "m", "timestamp": "2026-04-14T19:33:00Z", "uptime_seconds": 5}
    nested = {
        "type": "state",
        "state": "heartbeat",
        "data": {"timestamp": "2026-04-14T19:33:00Z", "uptime_seconds": 5},
    }
    for payload in (flat, nested):
        work = validate_inbound(_item(f"locker/{BANK}/{suffix}", payload))
        assert isinstance(work, Beat) and work.heartbeat.heartbeat.data.uptime_seconds == 5


def test_both_last_will_forms_on_both_topics() -> None:
    upstream = example("state-connection-lost.json")
    seed = {"type": "state", "state": "connection_lost", "status": "offline", "timestamp": NOW}
    for suffix in ("state", "state/connection"):
        for payload in (upstream, {**seed, "timestamp": "2023-10-27T10:00:00Z"}):
            assert isinstance(validate_inbound(_item(f"locker/{BANK}/{suffix}", payload)), LastWill)


# --- the seed's section 4 ------------------------------------------------------------------


def _seed_topic(topic: str) -> str:
    for placeholder in ("uuid-123", "{uuid}", "{locker_uuid}"):
        topic = topic.replace(placeholder, BANK)
    return topic


def _placeholder(payload: dict[str, Any]) -> bool:
    return payload.get("timestamp") == "..."


def test_the_seed_examples_are_found() -> None:
    examples = seed_examples()
    assert len(examples) >= 9  # 2 commands, 3 responses, 2 events, heartbeat, last will(s)


def test_every_device_to_backend_seed_example_is_accepted_on_its_topic() -> None:
    accepted = 0
    for seed in seed_examples():
        if seed.topic is None or "/command" in seed.topic or "/provisioning/" in seed.topic:
            continue
        if _placeholder(seed.payload):
            continue  # 4.5 writes "timestamp": "..."; 4.5.1 repeats it in full
        work = validate_inbound(_item(_seed_topic(seed.topic), seed.payload))
        assert isinstance(work, Beat | Response | Event | LastWill), seed.heading
        accepted += 1
    assert accepted == 7  # 3 responses, 2 events, heartbeat, last will
    register = seed_inline_payloads()[0]
    work = validate_inbound(_item("locker/register/das-ist-der-token-123", register))
    assert isinstance(work, Registration) and work.dialect == "seed"


def test_our_seed_commands_have_the_shape_of_the_seed_examples() -> None:
    commands = {
        s.payload["action"]: s.payload
        for s in seed_examples()
        if s.topic and s.topic.endswith("/command")
    }
    ours = {
        "open_compartment": _payload(command_message(BANK, _open(), "seed")),
        "apply_config": _payload(command_message(BANK, _config("seed"), "seed")),
    }
    for action, written in commands.items():
        mine = ours[action]
        # the seed's keys, plus `expires_at` (DESIGN section 3: our addition)
        assert set(mine) == set(written) | {"expires_at"}, action
        assert set(mine["data"]) == set(written["data"]), action
        for key, value in written["data"].items():
            if isinstance(value, list):
                assert [set(i) for i in mine["data"][key]] == [set(value[0])] * len(SPECS)
            else:
                assert type(mine["data"][key]) is type(value), (action, key)


def test_the_seed_provisioning_replies_keep_their_written_fields() -> None:
    written_error = next(s.payload for s in seed_examples() if s.payload.get("status") == "error")
    written_success = seed_inline_payloads()[1]
    error = _payload(provisioning_error("c", NOW))
    success = _payload(provisioning_success("c", BANK, "pw", NOW))
    assert {k: error[k] for k in written_error} == written_error
    assert success["status"] == "success" and set(success["data"]) == set(written_success["data"])


# --- the dialect itself --------------------------------------------------------------------


def test_dialect_rules() -> None:
    assert dialect_of_registration(True) == "openlocker"
    assert dialect_of_registration(False) == "seed"
    assert effective_dialect("auto", None) is None
    assert effective_dialect("auto", "openlocker") == "openlocker"
    assert effective_dialect("seed", "openlocker") == "seed"  # an explicit choice wins
    assert replays_stored_answers("seed") and not replays_stored_answers("openlocker")


def _bank(dialect: str, detected: str | None = None) -> LockerBank:
    bank = LockerBank(BANK)
    for event in LockerBank.create(
        BANK,
        name="B",
        location="",
        compartments=SPECS,
        heartbeat_interval_seconds=15,
        now=NOW,
        dialect=dialect,
    ):
        bank.apply(event)
    bank.apply(
        LockerBankProvisioned(occurred_at=NOW, client_id="c", password_sha256="x", dialect=detected)
    )
    return bank


def test_an_auto_bank_takes_the_registrations_dialect_and_hashes_the_clients_way() -> None:
    bank = _bank("auto", "openlocker")
    assert bank.dialect == "openlocker" and not bank.replays_stored_answers
    (event,) = bank.request_config(
        transaction_id="t", requested_by="x", now=NOW, ttl=timedelta(hours=1)
    )
    assert isinstance(event, ConfigApplyRequested)
    assert event.config_hash == openlocker_config_hash([(1, 1, 0), (2, 1, 1), (3, 2, 7)])
    assert _bank("seed", "openlocker").dialect == "seed"


def test_an_openlocker_bank_needs_slave_ids_from_one() -> None:
    with pytest.raises(RuleViolation, match="slaveId >= 1"):
        LockerBank.create(
            BANK,
            name="B",
            location="",
            compartments=[CompartmentSpec(number=1, slave_id=0, address=0)],
            heartbeat_interval_seconds=15,
            now=NOW,
            dialect="openlocker",
        )


def test_update_changes_the_mapping_and_nothing_when_nothing_changes() -> None:
    bank = _bank("openlocker")
    assert bank.update(now=NOW, name="B") == []
    (event,) = bank.update(now=NOW, compartments=[CompartmentSpec(number=1, slave_id=1, address=5)])
    bank.apply(event)
    assert sorted(bank.compartments) == [1] and bank.compartments[1].address == 5
    with pytest.raises(InvalidInput):
        bank.update(now=NOW, heartbeat_interval_seconds=0)
