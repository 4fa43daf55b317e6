"""Command handling on the device: dedup, expiry, in-flight marks, hardware, responses.

`CommandHandler.handle` turns one received command payload into an
`Outcome` (what to send, if anything). It is synchronous and knows nothing of
MQTT, so its rules are unit-testable:

1. A transaction already answered gets the stored response again, byte for byte.
2. A transaction marked in flight (the device crashed mid-action) is answered
   `UNKNOWN_ERROR` and never repeated.
3. A command received after its `expires_at` (by the device's clock) is
   refused with `COMMAND_EXPIRED` and not executed.
4. Otherwise the command is validated, marked in flight *and saved*, executed
   once, and its response saved before it is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from pydantic import ValidationError

from backend.domain.contract import (
    Action,
    Command,
    CompartmentMapping,
    ContractError,
    config_hash,
    decode_json,
    parse,
)
from simulator.faults import CrashPoint, FaultDice, Faults
from simulator.hardware import Hardware
from simulator.openlocker import (
    INVALID_COMMAND,
    ClientCommand,
    accept_command,
    client_config_hash,
    config_problem,
    open_number,
)
from simulator.state import AppliedConfig, DeviceState, InFlight, StateStore, StoredResponse
from simulator.wire import Wire

COMMAND_EXPIRED = "COMMAND_EXPIRED"
COMPARTMENT_NOT_FOUND = "COMPARTMENT_NOT_FOUND"
DOOR_JAMMED = "DOOR_JAMMED"
UNKNOWN_ERROR = "UNKNOWN_ERROR"
INVALID_PAYLOAD = "INVALID_PAYLOAD"
INVALID_CONFIG = "INVALID_CONFIG"
UNSUPPORTED_ACTION = "UNSUPPORTED_ACTION"
HARDWARE_ERROR = "HARDWARE_ERROR"
OPENLOCKER_RECORD_TTL = timedelta(days=7)  # the client keeps its command records a week

OutcomeKind = Literal[
    "executed",  # the hardware acted (or failed: jammed) and the response is fresh
    "replayed",  # a duplicate or re-ask: the stored response again
    "interrupted",  # in flight at a crash: UNKNOWN_ERROR, never repeated
    "refused",  # not executed: expired, unknown compartment, invalid data, unsupported
    "dropped",  # fault injection: ignored as if never received
    "rejected",  # not a command we can answer (no usable transaction id or action)
]

_ACTIONS: tuple[str, ...] = get_args(Action)


class SimulatedCrash(Exception):
    """Raised inside the handler at a crash point; the device dies on the spot."""

    def __init__(self, point: CrashPoint, transaction_id: str) -> None:
        super().__init__(f"simulated crash {point} in {transaction_id}")
        self.point = point
        self.transaction_id = transaction_id


@dataclass(frozen=True)
class Outcome:
    """What became of one received command."""

    kind: OutcomeKind
    transaction_id: str | None
    payload: bytes | None = None
    send: bool = True
    reason: str | None = None


class CommandHandler:
    """Applies the device's command rules against its persisted state and its hardware."""

    def __init__(
        self,
        *,
        store: StateStore,
        state: DeviceState,
        hardware: Hardware,
        dice: FaultDice,
        faults: Callable[[], Faults],
        clock: Callable[[], datetime],
        wire: Wire,
        next_crash: Callable[[], CrashPoint | None] = lambda: None,
        on_config: Callable[[AppliedConfig], None] = lambda config: None,
    ) -> None:
        self.store = store
        self.state = state
        self.hardware = hardware
        self.dice = dice
        self.faults = faults
        self.clock = clock
        self.wire = wire
        self.next_crash = next_crash
        self.on_config = on_config
        self._seen_message_ids: set[str] = set()

    def handle(self, raw: bytes) -> Outcome:
        """Decide, act (at most once per transaction) and return what to send."""
        if self.wire.upstream:
            return self._handle_openlocker(raw)
        try:
            command = parse(Command, raw)
        except ContractError as exc:
            return self._malformed(raw, str(exc))
        tx = command.transaction_id
        stored = self.state.responses.get(tx)
        if stored is not None:
            return Outcome("replayed", tx, stored.payload.encode())
        if tx in self.state.in_flight:
            payload = self.wire.response(
                command.action,
                tx,
                error_code=UNKNOWN_ERROR,
                message="Interrupted before completion; not repeated.",
            )
            self._store(tx, payload, command.expires_at)
            return Outcome("interrupted", tx, payload)
        faults = self.faults()
        if self.dice.drop(faults):
            return Outcome("dropped", tx, send=False, reason="drop fault")
        if self.clock() > command.expires_at:
            return self._refuse(command, COMMAND_EXPIRED, "Command received after it expired.")
        if command.action == "open_compartment":
            return self._open(command, faults)
        if command.action == "apply_config":
            return self._apply_config(command, faults)
        return self._refuse(command, UNSUPPORTED_ACTION, f"{command.action} is not supported.")

    # --- actions ------------------------------------------------------------------------

    def _open(self, command: Command, faults: Faults) -> Outcome:
        tx = command.transaction_id
        try:
            number = command.open_data().compartment_number
        except ValidationError:
            return self._refuse(command, INVALID_PAYLOAD, "data.compartment_number is invalid.")
        if not self.hardware.has(number):
            return self._refuse(
                command, COMPARTMENT_NOT_FOUND, f"Compartment {number} does not exist."
            )
        crash = self.next_crash()
        self._mark_in_flight(command)
        self._crash_if(crash, "before_action", tx)
        opened = self.hardware.open(tx, number, jammed=self.dice.jam(faults))
        self._crash_if(crash, "after_action", tx)
        if opened:
            payload = self.wire.response(
                "open_compartment", tx, message="Compartment opened successfully."
            )
        else:
            payload = self.wire.response(
                "open_compartment",
                tx,
                error_code=DOOR_JAMMED,
                message="Could not open compartment, mechanism is jammed.",
            )
        self._store(tx, payload, command.expires_at)
        self._crash_if(crash, "before_response", tx)
        return Outcome("executed", tx, payload, send=not self.dice.lose_response(faults))

    def _apply_config(self, command: Command, faults: Faults) -> Outcome:
        tx = command.transaction_id
        try:
            data = command.config_data()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return self._refuse(command, INVALID_CONFIG, f"Invalid config: {where}."[:200])
        ids = [c.id for c in data.compartments]
        if len(set(ids)) != len(ids):
            return self._refuse(
                command, INVALID_CONFIG, "Invalid config: duplicate compartment ids."
            )
        computed = config_hash(data.compartments, data.heartbeat_interval_seconds)
        crash = self.next_crash()
        self._mark_in_flight(command)
        self._crash_if(crash, "before_action", tx)
        self.hardware.record(tx)
        self.hardware.configure(ids)
        config = AppliedConfig(
            heartbeat_interval_seconds=data.heartbeat_interval_seconds,
            compartments=list(data.compartments),
            config_hash=computed,
        )
        self.state.config = config
        self.on_config(config)
        self._crash_if(crash, "after_action", tx)
        message = "Config applied."
        if computed != data.config_hash:
            message = "Config applied; its hash differs from the one sent."
        payload = self.wire.response(
            "apply_config", tx, message=message, applied_config_hash=computed
        )
        self._store(tx, payload, command.expires_at)
        self._crash_if(crash, "before_response", tx)
        return Outcome("executed", tx, payload, send=not self.dice.lose_response(faults))

    # --- the openlocker dialect: the real client's rules (simulator.openlocker) -----------

    def _handle_openlocker(self, raw: bytes) -> Outcome:
        command = accept_command(raw)
        if command is None:
            return Outcome("rejected", None, send=False, reason="no valid required ids")
        tx = command.transaction_id
        if command.message_id in self._seen_message_ids:
            return Outcome("dropped", tx, send=False, reason="duplicate message_id")
        self._seen_message_ids.add(command.message_id)
        if tx in self.state.responses or tx in self.state.in_flight:
            # the real client never answers a transaction twice (no stored-answer replay)
            return Outcome("dropped", tx, send=False, reason="transaction already seen")
        faults = self.faults()
        if self.dice.drop(faults):
            return Outcome("dropped", tx, send=False, reason="drop fault")
        keep_until = self.clock() + OPENLOCKER_RECORD_TTL
        if command.action == "open_compartment":
            return self._openlocker_open(command, faults, keep_until)
        if command.action == "apply_config":
            return self._openlocker_config(command, faults, keep_until)
        return self._openlocker_error(
            command, keep_until, INVALID_COMMAND, f"Unknown action: {command.action}"
        )

    def _openlocker_open(
        self, command: ClientCommand, faults: Faults, keep_until: datetime
    ) -> Outcome:
        tx = command.transaction_id
        number = open_number(command)
        if number is None:
            return self._openlocker_error(
                command, keep_until, INVALID_COMMAND, "Invalid open_compartment payload."
            )
        if not self.hardware.has(number):
            return self._openlocker_error(
                command,
                keep_until,
                HARDWARE_ERROR,
                f"Compartment {number} is not configured on this client",
            )
        crash = self.next_crash()
        self.state.in_flight[tx] = InFlight(
            action=command.action, started_at=self.clock(), expires_at=keep_until
        )
        self.store.save(self.state)
        self._crash_if(crash, "before_action", tx)
        opened = self.hardware.open(tx, number, jammed=self.dice.jam(faults))
        self._crash_if(crash, "after_action", tx)
        if opened:
            payload = self.wire.response(
                "open_compartment", tx, message=f"Compartment {number} opened successfully."
            )
        else:
            payload = self.wire.response(
                "open_compartment", tx, error_code=DOOR_JAMMED, message="Door is jammed"
            )
        self._store(tx, payload, keep_until)
        self._crash_if(crash, "before_response", tx)
        return Outcome("executed", tx, payload, send=not self.dice.lose_response(faults))

    def _openlocker_config(
        self, command: ClientCommand, faults: Faults, keep_until: datetime
    ) -> Outcome:
        tx = command.transaction_id
        problem = config_problem(command)
        if problem is not None:
            return self._openlocker_error(command, keep_until, *problem)
        entries = command.data["compartments"]
        computed = client_config_hash(entries)
        self.hardware.record(tx)
        self.hardware.configure([e["compartment_number"] for e in entries])
        config = AppliedConfig(
            heartbeat_interval_seconds=command.data["heartbeat_interval_seconds"],
            compartments=[
                CompartmentMapping(
                    id=e["compartment_number"], slaveId=e["slaveId"], address=e["address"]
                )
                for e in entries
            ],
            config_hash=computed,
        )
        self.state.config = config
        self.on_config(config)
        payload = self.wire.response(
            "apply_config", tx, message="Config applied.", applied_config_hash=computed
        )
        self._store(tx, payload, keep_until)
        return Outcome("executed", tx, payload, send=not self.dice.lose_response(faults))

    def _openlocker_error(
        self, command: ClientCommand, keep_until: datetime, code: str, message: str
    ) -> Outcome:
        payload = self.wire.response(
            command.action,  # type: ignore[arg-type]  # any action string, as the client
            command.transaction_id,
            error_code=code,
            message=message,
        )
        self._store(command.transaction_id, payload, keep_until)
        return Outcome("refused", command.transaction_id, payload, reason=code)

    # --- helpers ------------------------------------------------------------------------

    def _refuse(self, command: Command, code: str, message: str) -> Outcome:
        payload = self.wire.response(
            command.action, command.transaction_id, error_code=code, message=message
        )
        self._store(command.transaction_id, payload, command.expires_at)
        return Outcome("refused", command.transaction_id, payload, reason=code)

    def _malformed(self, raw: bytes, reason: str) -> Outcome:
        """Answer INVALID_PAYLOAD when the transaction and action are readable; else drop."""
        try:
            data = decode_json(raw)
        except ContractError:
            return Outcome("rejected", None, send=False, reason=reason)
        tx, action = data.get("transaction_id"), data.get("action")
        if not isinstance(tx, str) or not 0 < len(tx) <= 128 or action not in _ACTIONS:
            return Outcome("rejected", None, send=False, reason=reason)
        stored = self.state.responses.get(tx)
        if stored is not None:
            return Outcome("replayed", tx, stored.payload.encode())
        payload = self.wire.response(
            action,  # checked against the Action literal above
            tx,
            error_code=INVALID_PAYLOAD,
            message=f"Invalid command: {reason}"[:1000],
        )
        # Not stored: without a valid expires_at there is nothing to bound how long to keep it.
        return Outcome("refused", tx, payload, reason=INVALID_PAYLOAD)

    def _mark_in_flight(self, command: Command) -> None:
        self.state.in_flight[command.transaction_id] = InFlight(
            action=command.action, started_at=self.clock(), expires_at=command.expires_at
        )
        self.store.save(self.state)

    def _store(self, tx: str, payload: bytes, expires_at: datetime) -> None:
        now = self.clock()
        self.state.in_flight.pop(tx, None)
        self.state.responses[tx] = StoredResponse(
            payload=payload.decode(), expires_at=expires_at, stored_at=now
        )
        self.state.prune(now)
        self.store.save(self.state)

    @staticmethod
    def _crash_if(chosen: CrashPoint | None, point: CrashPoint, tx: str) -> None:
        if chosen == point:
            raise SimulatedCrash(point, tx)
