"""The simulator's `openlocker` dialect against the upstream contract, not our models:
what it emits passes the upstream JSON schemas, what it accepts is what the real client
accepts (the backend's openlocker commands), what it refuses is what the client refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.domain.dialect import config_hash_for
from backend.domain.events import CompartmentOpeningRequested, CompartmentSpec, ConfigApplyRequested
from backend.domain.messages import command_message, restamp
from backend.domain.timeutil import FrozenClock
from simulator.commands import CommandHandler
from simulator.faults import FaultDice, Faults
from simulator.hardware import Hardware
from simulator.state import DeviceState, StateStore
from simulator.wire import Wire
from tests.support.peer_contract import EXAMPLES, SCHEMAS, schema_errors

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BANK = "0b5e7d1c-3a52-4d6e-9f0a-1c2d3e4f5a6b"
SPECS = [CompartmentSpec(number=n, slave_id=1, address=n - 1) for n in (1, 2, 3)]

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="../shared/peer is not there")


def _schema(name: str) -> Path:
    return SCHEMAS / "payloads" / name


def test_every_payload_passes_the_upstream_schema() -> None:
    wire = Wire(FrozenClock(START).now, upstream=True)
    checks: list[tuple[bytes, Path]] = [
        (
            wire.register("locker-client-1a2b3c4d"),
            SCHEMAS / "messages" / "provisioning-request.json",
        ),
        (wire.heartbeat(12.7), _schema("state-heartbeat.json")),
        (wire.last_will(), _schema("state-connection-lost.json")),
        (wire.snapshot({2: "open", 1: "closed", 3: "unknown"}), _schema("state-snapshot.json")),
        (
            wire.response("open_compartment", "t1", message="Compartment 1 opened successfully."),
            _schema("response-command-success.json"),
        ),
        (
            wire.response(
                "apply_config", "t2", message="Config applied.", applied_config_hash="a" * 64
            ),
            _schema("response-apply-config-success.json"),
        ),
        (
            wire.response("open_compartment", "t3", error_code="HARDWARE_ERROR", message="x"),
            _schema("response-command-error.json"),
        ),
    ]
    ids = set()
    for payload, schema in checks:
        document = json.loads(payload)
        assert schema_errors(schema, document) == [], (schema.name, document)
        ids.add(document["message_id"])
    assert len(ids) == len(checks), "a fresh message_id on every message"
    assert json.loads(wire.heartbeat(12.7))["uptime_seconds"] == 12, "an integer, as the client"


class _Harness:
    def __init__(self, tmp: Path) -> None:
        self.clock = FrozenClock(START)
        store = StateStore(tmp, durable=False)
        self.hardware = Hardware([1, 2, 3], dwell_seconds=None)
        self.handler = CommandHandler(
            store=store,
            state=DeviceState(),
            hardware=self.hardware,
            dice=FaultDice(0),
            faults=lambda: Faults(),
            clock=self.clock.now,
            wire=Wire(self.clock.now, upstream=True),
        )

    def send(self, payload: bytes) -> dict[str, Any] | None:
        outcome = self.handler.handle(payload)
        return json.loads(outcome.payload) if outcome.payload and outcome.send else None


def _open(number: int, tx: str = "tx-1") -> bytes:
    event = CompartmentOpeningRequested(
        occurred_at=START, transaction_id=tx, compartment_number=number,
        requested_by="op", expires_at=START + timedelta(seconds=30),
    )  # fmt: skip
    message = command_message(BANK, event, "openlocker")
    assert message is not None
    return message.payload


def _config(specs: list[CompartmentSpec], dialect: str = "openlocker", tx: str = "cfg") -> bytes:
    event = ConfigApplyRequested(
        occurred_at=START, transaction_id=tx, requested_by="op",
        expires_at=START + timedelta(hours=1),
        config_hash=config_hash_for(dialect, [(s.number, s.slave_id, s.address) for s in specs], 5),
        heartbeat_interval_seconds=5, compartments=specs,
    )  # fmt: skip
    message = command_message(BANK, event, dialect)
    assert message is not None
    return message.payload


def test_accepts_the_backends_openlocker_commands_and_verifies_the_hash(tmp_path: Path) -> None:
    device = _Harness(tmp_path)
    applied = device.send(_config(SPECS))
    assert applied is not None and applied["result"] == "success", applied
    assert schema_errors(_schema("response-apply-config-success.json"), applied) == []
    opened = device.send(_open(2))
    assert opened is not None and opened["result"] == "success"
    assert opened["message"] == "Compartment 2 opened successfully."


def test_refuses_what_the_real_client_refuses(tmp_path: Path) -> None:
    device = _Harness(tmp_path)
    # the seed form: no message_id -> dropped without an answer
    assert device.send(_config(SPECS, "seed", "seed-cfg")) is None
    # our seed hash under the openlocker form -> INVALID_CONFIG
    seed_hash = json.loads(_config(SPECS))
    seed_hash["data"]["config_hash"] = config_hash_for("seed", [(1, 1, 0), (2, 1, 1), (3, 1, 2)], 5)
    seed_hash["transaction_id"] = "bad-hash"
    answer = device.send(json.dumps(seed_hash).encode())
    assert answer is not None and answer["error_code"] == "INVALID_CONFIG"
    # a relay the board does not have -> INVALID_CONFIG
    beyond = device.send(
        _config([*SPECS, CompartmentSpec(number=9, slave_id=1, address=8)], tx="b")
    )
    assert beyond is not None and beyond["error_code"] == "INVALID_CONFIG"


def test_never_answers_a_transaction_twice_and_ignores_expiry(tmp_path: Path) -> None:
    device = _Harness(tmp_path)
    device.send(_config(SPECS))
    first = _open(1, "tx-once")
    assert device.send(first) is not None
    assert device.send(first) is None, "same message_id: dropped"
    assert device.send(restamp(first)) is None, "re-ask (new message_id): no stored answer"
    assert device.hardware.executed["tx-once"] == 1, "the door opened once"
    device.clock.advance(3600)  # long past expires_at: the client ignores it
    assert device.send(_open(3, "late")) is not None
