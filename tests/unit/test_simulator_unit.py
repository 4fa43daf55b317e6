"""Unit tests of the simulator's pure parts: state file, faults, hardware, payloads, command rules.

No broker here: `CommandHandler` is driven directly with command payloads.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.domain.contract import (
    CommandResponse,
    CompartmentMapping,
    CompartmentsSnapshot,
    ConnectionLost,
    DeviceEvent,
    Heartbeat,
    RegisterRequest,
    config_hash,
    parse,
    snapshot_entries,
)
from backend.domain.timeutil import FrozenClock, iso
from simulator import (
    DeviceConfig,
    DeviceState,
    FaultDice,
    Faults,
    Hardware,
    SimulatedCrash,
    SimulatedDevice,
    StateError,
    StateStore,
    device_name_for_token,
)
from simulator.commands import CommandHandler, Outcome
from simulator.faults import CRASH_POINTS, CrashPoint
from simulator.state import MAX_RESPONSES, StoredResponse
from simulator.wire import DeviceTopics, Wire

BANK = "0b9a3c5e-7f1d-4a2b-9c8d-1e2f3a4b5c6d"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def command(
    tx: str = "tx-1",
    action: str = "open_compartment",
    data: dict[str, object] | None = None,
    *,
    expires_at: datetime | None = None,
) -> bytes:
    return json.dumps(
        {
            "action": action,
            "transaction_id": tx,
            "timestamp": iso(START),
            "expires_at": iso(expires_at or START + timedelta(seconds=60)),
            "data": data if data is not None else {"compartment_number": 1},
        }
    ).encode()


class Rig:
    """A handler over a real state file, a hardware model and a frozen clock."""

    def __init__(self, directory: Path, *, faults: Faults | None = None, seed: int = 1) -> None:
        self.clock = FrozenClock(START)
        self.faults = faults or Faults()
        self.hardware = Hardware(range(1, 5), dwell_seconds=None)
        self.store = StateStore(directory, durable=False)
        self.dice = FaultDice(seed)
        self.crash_at: CrashPoint | None = None
        self.boot()

    def boot(self) -> None:
        """(Re)start the controller from the state file; the hardware stays as it is."""
        self.state = self.store.load()
        self.handler = CommandHandler(
            store=self.store,
            state=self.state,
            hardware=self.hardware,
            dice=self.dice,
            faults=lambda: self.faults,
            clock=self.clock.now,
            wire=Wire(self.clock.now, upstream=False),
            next_crash=self._next_crash,
        )

    def _next_crash(self) -> CrashPoint | None:
        point, self.crash_at = self.crash_at, None
        return point

    def handle(self, raw: bytes) -> Outcome:
        return self.handler.handle(raw)

    def response(self, raw: bytes) -> CommandResponse:
        outcome = self.handle(raw)
        assert outcome.payload is not None
        return parse(CommandResponse, outcome.payload)


# --- state file ---------------------------------------------------------------------------


def test_state_store_creates_a_client_id_once_and_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "dev")
    first = store.load()
    assert first.client_id.startswith("locker-")
    assert store.path.exists()
    first.in_flight.clear()
    store.save(first)
    again = StateStore(tmp_path / "dev").load()
    assert again == first
    assert [p.name for p in (tmp_path / "dev").iterdir()] == ["state.json"], "no temp files left"


def test_state_store_refuses_a_corrupt_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path.write_text('{"client_id": 5, "responses": "nope"}')
    with pytest.raises(StateError):
        store.load()


def test_state_save_is_atomic_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path, durable=False)
    state = store.load()
    before = store.path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", boom)
    state.client_id = "locker-changed"
    with pytest.raises(OSError):
        store.save(state)
    assert store.path.read_bytes() == before, "the old state is intact"


def test_prune_forgets_long_expired_then_oldest(tmp_path: Path) -> None:
    state = DeviceState()
    old = StoredResponse(payload="{}", expires_at=START - timedelta(hours=2), stored_at=START)
    state.responses["old"] = old
    for i in range(MAX_RESPONSES + 5):
        state.responses[f"tx-{i}"] = StoredResponse(
            payload="{}", expires_at=START + timedelta(minutes=1), stored_at=START
        )
    state.prune(START)
    assert "old" not in state.responses
    assert len(state.responses) == MAX_RESPONSES
    assert "tx-0" not in state.responses and f"tx-{MAX_RESPONSES + 4}" in state.responses


# --- faults -------------------------------------------------------------------------------


def test_faults_validate_and_parse_from_a_spec() -> None:
    with pytest.raises(ValueError):
        Faults(duplicate_rate=1.5)
    faults = Faults.from_spec("duplicate=0.3, latency=0.2,skew=-5,restart=none")
    assert faults == Faults(duplicate_rate=0.3, latency_seconds=0.2, clock_skew_seconds=-5)
    assert faults.any and not Faults().any
    assert Faults.from_spec("") == Faults()
    with pytest.raises(ValueError):
        Faults.from_spec("explode=1")


def test_fault_dice_are_reproducible_per_seed() -> None:
    faults = Faults(duplicate_rate=0.5, drop_rate=0.3, jam_rate=0.2, latency_jitter_seconds=1)

    def roll(seed: int) -> list[object]:
        dice = FaultDice(seed)
        return [
            (dice.copies(faults), dice.drop(faults), dice.jam(faults), dice.latency(faults))
            for _ in range(50)
        ]

    assert roll(1) == roll(1)
    assert roll(1) != roll(2)


def test_duplicates_are_bounded_and_rates_zero_or_one_are_certain() -> None:
    dice = FaultDice(0)
    always = Faults(duplicate_rate=1.0, max_duplicates=2, jam_rate=1.0, crash_rate=1.0)
    assert {dice.copies(always) for _ in range(20)} == {3}
    assert all(dice.jam(always) for _ in range(20))
    assert {dice.crash(always) for _ in range(100)} == set(CRASH_POINTS)
    never = Faults()
    assert {dice.copies(never) for _ in range(20)} == {1}
    assert not any(dice.drop(never) or dice.crash(never) for _ in range(20))
    assert dice.next_connection_drop(never) is None


# --- hardware -----------------------------------------------------------------------------


async def test_hardware_dwell_closes_the_door_and_reports_to_the_listener() -> None:
    hardware = Hardware(range(1, 3), dwell_seconds=0.01)
    seen: list[tuple[int, str]] = []
    closed = asyncio.Event()

    def listener(n: int, state: str) -> None:
        seen.append((n, state))
        if state == "closed":
            closed.set()

    hardware.attach(listener)
    assert hardware.open("tx", 2, jammed=False)
    assert hardware.doors[2] == "open" and hardware.open_doors() == [2]
    async with asyncio.timeout(5):
        await closed.wait()
    assert seen == [(2, "open"), (2, "closed")]
    assert hardware.executed == {"tx": 1}


def test_hardware_jam_and_unreported_changes_while_detached() -> None:
    hardware = Hardware(range(1, 3), dwell_seconds=None)
    assert not hardware.open("jam", 1, jammed=True)
    assert hardware.doors[1] == "closed" and hardware.executed == {"jam": 1}
    hardware.open("tx", 1, jammed=False)  # nobody listening: the controller is down
    hardware.close_door(1)
    seen: list[tuple[int, str]] = []
    hardware.attach(lambda n, s: seen.append((n, s)))
    assert seen == [(1, "open"), (1, "closed")], "reported when the controller boots"
    hardware.configure([2, 3])
    assert sorted(hardware.doors) == [2, 3]


# --- payloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("upstream", [False])
def test_every_payload_parses_with_its_contract_model(upstream: bool) -> None:
    """The seed dialect (openlocker: tests/unit/test_simulator_openlocker.py, checked
    against the upstream schemas, not our models)."""
    wire = Wire(FrozenClock(START).now, upstream=upstream)
    built = [
        parse(RegisterRequest, wire.register("locker-abc")),
        parse(Heartbeat, wire.heartbeat(12.5)),
        parse(ConnectionLost, wire.last_will()),
        parse(CommandResponse, wire.response("open_compartment", "t", error_code="DOOR_JAMMED")),
        parse(CommandResponse, wire.response("apply_config", "t", applied_config_hash="ab")),
        parse(DeviceEvent, wire.door_event(3, "open")),
        parse(DeviceEvent, wire.qr_event("payload", "locker")),
        parse(CompartmentsSnapshot, wire.snapshot({2: "open", 1: "closed"})),
    ]
    assert all((m.message_id is not None) == upstream for m in built)
    assert built[3].result == "error" and built[4].result == "success"
    assert built[5].door_data().state == "open" and built[5].event_id
    good, bad = snapshot_entries(built[7])  # type: ignore[arg-type]  # a snapshot message here
    assert [c.compartment_number for c in good] == [1, 2] and bad == []


def test_device_topics_plain_upstream_and_legacy() -> None:
    plain = DeviceTopics.for_bank(BANK, upstream=False, legacy_status=False)
    assert (plain.heartbeat, plain.will, plain.snapshot) == (
        f"locker/{BANK}/state",
        f"locker/{BANK}/state",
        None,
    )
    up = DeviceTopics.for_bank(BANK, upstream=True, legacy_status=True)
    assert up.heartbeat.endswith("/state/heartbeat") and up.will.endswith("/state/connection")
    assert up.snapshot == f"locker/{BANK}/state/compartments"
    assert up.response == f"locker/{BANK}/status"
    assert (
        device_name_for_token("abc") == device_name_for_token("abc") != device_name_for_token("x")
    )


# --- command rules ------------------------------------------------------------------------


def test_open_executes_once_and_duplicates_replay_the_same_bytes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = rig.handle(command())
    assert first.kind == "executed" and rig.hardware.executed == {"tx-1": 1}
    assert parse(CommandResponse, first.payload or b"").result == "success"
    for _ in range(3):
        again = rig.handle(command())
        assert again.kind == "replayed" and again.payload == first.payload
    assert rig.hardware.executed == {"tx-1": 1}
    assert rig.hardware.doors[1] == "open"


def test_expired_by_the_device_clock_is_refused_and_never_executed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.clock.advance(61)
    response = rig.response(command())
    assert (response.result, response.error_code) == ("error", "COMMAND_EXPIRED")
    assert rig.hardware.executed == {}
    # a re-ask gets the same refusal, even if the clock went back
    rig.clock.set(START)
    assert rig.response(command()).error_code == "COMMAND_EXPIRED"
    assert rig.hardware.executed == {}


def test_unknown_compartment_invalid_data_and_unsupported_action(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.response(command("a", data={"compartment_number": 9})).error_code == (
        "COMPARTMENT_NOT_FOUND"
    )
    assert rig.response(command("b", data={"compartment_number": 0})).error_code == (
        "INVALID_PAYLOAD"
    )
    assert rig.response(command("c", "update_firmware", {})).error_code == "UNSUPPORTED_ACTION"
    assert rig.hardware.executed == {}


def test_malformed_commands(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.handle(b"{nope").kind == "rejected"
    assert rig.handle(b'{"action": "reboot", "transaction_id": "x"}').kind == "rejected"
    bad = json.dumps({"action": "open_compartment", "transaction_id": "t9", "data": {}}).encode()
    outcome = rig.handle(bad)
    assert outcome.kind == "refused"
    assert parse(CommandResponse, outcome.payload or b"").error_code == "INVALID_PAYLOAD"


def test_apply_config_reports_the_hash_it_computed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    mapping = [CompartmentMapping(id=i, slaveId=2, address=10 + i) for i in (3, 1, 2)]
    data = {
        "config_hash": "f" * 64,  # wrong on purpose
        "heartbeat_interval_seconds": 7,
        "compartments": [m.model_dump() for m in mapping],
    }
    response = rig.response(command("cfg", "apply_config", data))
    assert response.result == "success"
    assert response.applied_config_hash == config_hash(mapping, 7)
    assert rig.state.config is not None and rig.state.config.heartbeat_interval_seconds == 7
    assert sorted(rig.hardware.doors) == [1, 2, 3]
    assert StateStore(tmp_path).load().config == rig.state.config, "persisted"
    dup = {**data, "compartments": [m.model_dump() for m in (mapping[0], mapping[0])]}
    assert rig.response(command("cfg2", "apply_config", dup)).error_code == "INVALID_CONFIG"


@pytest.mark.parametrize(
    ("point", "executions", "reask"),
    [
        ("before_action", 0, "UNKNOWN_ERROR"),
        ("after_action", 1, "UNKNOWN_ERROR"),
        ("before_response", 1, None),
    ],
)
def test_crash_mid_command_is_never_repeated(
    tmp_path: Path, point: CrashPoint, executions: int, reask: str | None
) -> None:
    rig = Rig(tmp_path)
    rig.crash_at = point
    with pytest.raises(SimulatedCrash):
        rig.handle(command())
    rig.boot()  # a new process reads the state file
    assert rig.hardware.executed.get("tx-1", 0) == executions
    first = rig.response(command())
    assert first.error_code == reask
    assert rig.response(command()) == first
    assert rig.hardware.executed.get("tx-1", 0) == executions
    assert rig.state.in_flight == {}


def test_drop_and_lost_response_faults(tmp_path: Path) -> None:
    rig = Rig(tmp_path, faults=Faults(drop_rate=1.0))
    assert rig.handle(command()).kind == "dropped"
    assert rig.hardware.executed == {} and rig.state.responses == {}
    rig.faults = Faults(lose_response_rate=1.0)
    lost = rig.handle(command())
    assert (lost.kind, lost.send) == ("executed", False)
    rig.faults = Faults()
    assert rig.handle(command()).kind == "replayed"
    assert rig.hardware.executed == {"tx-1": 1}


delivery = st.tuples(
    st.integers(min_value=0, max_value=5),  # which transaction
    st.sampled_from([None, None, None, *CRASH_POINTS]),  # crash while handling it?
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deliveries=st.lists(delivery, min_size=1, max_size=40))
def test_any_delivery_sequence_executes_each_transaction_at_most_once(
    tmp_path_factory: pytest.TempPathFactory, deliveries: list[tuple[int, CrashPoint | None]]
) -> None:
    rig = Rig(tmp_path_factory.mktemp("prop"))
    answers: dict[str, bytes] = {}
    for index, crash in deliveries:
        tx = f"tx-{index}"
        rig.crash_at = crash
        try:
            outcome = rig.handle(command(tx, data={"compartment_number": index % 4 + 1}))
        except SimulatedCrash:
            rig.boot()
            continue
        assert outcome.payload is not None
        if tx in answers:
            assert outcome.payload == answers[tx], "an answered transaction never changes"
        answers[tx] = outcome.payload
    assert all(count == 1 for count in rig.hardware.executed.values())


def test_device_clock_skew_applies_to_its_clock(tmp_path: Path) -> None:
    clock = FrozenClock(START)
    config = DeviceConfig(name="d", broker_host="127.0.0.1", broker_port=1, state_dir=tmp_path)
    device = SimulatedDevice(config, faults=Faults(clock_skew_seconds=-30), clock=clock)
    assert device.now() == START - timedelta(seconds=30)
    assert device.heartbeat_interval == 5.0 and device.bank_uuid is None
