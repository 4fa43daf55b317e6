"""The LockerBank aggregate: a cabinet and its compartments, rebuilt from its events.

Command methods check the rules of DESIGN section 7 and return the new events
(nothing is applied until the caller appends them); `apply` folds an event into
the state. Pure: no I/O, no clock (times come in as arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from backend.domain.alerts import check_note
from backend.domain.command_status import (
    AFTER_EXPIRY_STATUSES,
    LATE_ANSWER_STATUSES,
    OPEN_STATUSES,
    CommandStatus,
)
from backend.domain.dialect import (
    DIALECT_CHOICES,
    OPENLOCKER_MIN_SLAVE_ID,
    Dialect,
    config_hash_for,
    effective_dialect,
    replays_stored_answers,
)
from backend.domain.errors import InvalidInput, NotFound, RuleViolation
from backend.domain.events import (
    AlertAcknowledged,
    BankStatus,
    CommandAction,
    CommandExpired,
    CommandFailed,
    CommandSent,
    CommandTimedOut,
    CompartmentOpened,
    CompartmentOpeningRequested,
    CompartmentSpec,
    ConfigApplied,
    ConfigApplyRequested,
    CredentialsRevoked,
    DeviceEventRecorded,
    DomainEvent,
    DoorStateChanged,
    LockerBankCameOnline,
    LockerBankCreated,
    LockerBankProvisioned,
    LockerBankUpdated,
    LockerBankWentOffline,
    ProvisioningRejected,
    ProvisioningTokenIssued,
    QrScanned,
)
from backend.domain.outcomes import ResponseResult

MAX_NAME = 100
MAX_LOCATION = 200
MAX_COMPARTMENTS = 1000
MAX_HEARTBEAT_INTERVAL = 3600  # seconds
CONTROL_CHARACTERS = "".join(map(chr, [*range(0x20), 0x7F]))
COMMAND_ABLE = frozenset({"provisioned", "online", "offline"})


def _has_control(text: str) -> bool:
    return any(ch in CONTROL_CHARACTERS for ch in text)


@dataclass(slots=True)
class Compartment:
    """One numbered compartment of a bank."""

    number: int
    slave_id: int
    address: int
    door_state: str = "unknown"
    open_transaction: str | None = None


@dataclass(slots=True)
class PendingCommand:
    """A command the aggregate still has to hear about (or may hear about late)."""

    transaction_id: str
    action: CommandAction
    status: CommandStatus
    compartment_number: int | None = None
    config_hash: str | None = None


@dataclass(slots=True)
class LockerBank:
    """State of one bank, as folded from its events."""

    uuid: str
    version: int = 0
    exists: bool = False
    name: str = ""
    location: str = ""
    heartbeat_interval_seconds: int = 30
    status: BankStatus = "unprovisioned"
    compartments: dict[int, Compartment] = field(default_factory=dict)
    token_hmac: str | None = None
    token_expires_at: datetime | None = None
    commands: dict[str, PendingCommand] = field(default_factory=dict)
    applied_config_hash: str | None = None
    dialect_choice: str = "seed"
    detected_dialect: str | None = None

    @property
    def dialect(self) -> Dialect | None:
        """The dialect commands are built in: the operator's choice, else what the
        registration suggested; None for an `auto` bank not yet registered."""
        return effective_dialect(self.dialect_choice, self.detected_dialect)

    @property
    def replays_stored_answers(self) -> bool:
        """Whether asking this bank again can recover a lost answer (DESIGN section 9)."""
        return replays_stored_answers(self.dialect)

    @property
    def desired_config_hash(self) -> str:
        """The hash the device reports once it applied the current mapping (its dialect's)."""
        return desired_hash(
            list(self.compartments_spec()), self.heartbeat_interval_seconds, self.dialect
        )

    def compartments_spec(self) -> list[CompartmentSpec]:
        return [
            CompartmentSpec(number=c.number, slave_id=c.slave_id, address=c.address)
            for c in sorted(self.compartments.values(), key=lambda c: c.number)
        ]

    # ----- factory -----------------------------------------------------------------------

    @staticmethod
    def create(
        uuid: str,
        *,
        name: str,
        location: str,
        compartments: list[CompartmentSpec],
        heartbeat_interval_seconds: int,
        now: datetime,
        dialect: str = "auto",
    ) -> list[DomainEvent]:
        """Validate a new bank and return its LockerBankCreated event."""
        name, location = _check_settings(
            name, location, compartments, heartbeat_interval_seconds, dialect
        )
        return [
            LockerBankCreated(
                occurred_at=now,
                name=name,
                location=location,
                heartbeat_interval_seconds=heartbeat_interval_seconds,
                compartments=sorted(compartments, key=lambda c: c.number),
                dialect=dialect,
            )
        ]

    def update(
        self,
        *,
        now: datetime,
        name: str | None = None,
        location: str | None = None,
        compartments: list[CompartmentSpec] | None = None,
        heartbeat_interval_seconds: int | None = None,
        dialect: str | None = None,
    ) -> list[DomainEvent]:
        """Edit a bank; returns LockerBankUpdated, or nothing if nothing changes."""
        self._require_exists()
        new_name, new_location = _check_settings(
            self.name if name is None else name,
            self.location if location is None else location,
            self.compartments_spec() if compartments is None else compartments,
            self.heartbeat_interval_seconds
            if heartbeat_interval_seconds is None
            else heartbeat_interval_seconds,
            self.dialect_choice if dialect is None else dialect,
            detected=self.detected_dialect,
        )
        if compartments is not None:
            for number, open_tx in (
                (c.number, c.open_transaction) for c in self.compartments.values()
            ):
                if open_tx is not None and number not in {s.number for s in compartments}:
                    raise RuleViolation(
                        f"compartment {number} has an open request in flight ({open_tx})"
                    )
        event = LockerBankUpdated(
            occurred_at=now,
            name=new_name,
            location=new_location,
            heartbeat_interval_seconds=self.heartbeat_interval_seconds
            if heartbeat_interval_seconds is None
            else heartbeat_interval_seconds,
            compartments=sorted(
                self.compartments_spec() if compartments is None else compartments,
                key=lambda c: c.number,
            ),
            dialect=self.dialect_choice if dialect is None else dialect,
        )
        unchanged = (
            event.name == self.name
            and event.location == self.location
            and event.heartbeat_interval_seconds == self.heartbeat_interval_seconds
            and event.compartments == self.compartments_spec()
            and event.dialect == self.dialect_choice
        )
        return [] if unchanged else [event]

    # ----- commands ----------------------------------------------------------------------

    def issue_token(self, token_hmac: str, *, now: datetime, ttl: timedelta) -> list[DomainEvent]:
        self._require_exists()
        return [
            ProvisioningTokenIssued(occurred_at=now, token_hmac=token_hmac, expires_at=now + ttl)
        ]

    def provision(
        self,
        token_hmac: str,
        *,
        client_id: str,
        password_sha256: str,
        now: datetime,
        dialect: str | None = None,
    ) -> list[DomainEvent]:
        """Accept a registration whose token matches; otherwise return the rejection."""
        self._require_exists()
        reason = self._token_problem(token_hmac, now)
        if reason:
            return [ProvisioningRejected(occurred_at=now, client_id=client_id, reason=reason)]
        return [
            LockerBankProvisioned(
                occurred_at=now,
                client_id=client_id,
                password_sha256=password_sha256,
                dialect=dialect,
            )
        ]

    def revoke(self, *, now: datetime, reason: str) -> list[DomainEvent]:
        """Revoke in any state: credentials (if any) and every pending provisioning token are
        void from now on; the reason is required and recorded with the event."""
        self._require_exists()
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("a reason is required to revoke a bank")
        if "\x00" in reason:
            raise InvalidInput("reason must not contain NUL characters")
        return [CredentialsRevoked(occurred_at=now, reason=reason.strip())]

    def request_open(
        self,
        number: int,
        *,
        transaction_id: str,
        requested_by: str,
        now: datetime,
        ttl: timedelta,
    ) -> list[DomainEvent]:
        compartment = self.compartment(number)
        self._require_commandable()
        if compartment.open_transaction is not None:
            raise RuleViolation(
                f"compartment {number} of {self.name!r} already has an open request in flight "
                f"({compartment.open_transaction})"
            )
        return [
            CompartmentOpeningRequested(
                occurred_at=now,
                transaction_id=transaction_id,
                compartment_number=number,
                requested_by=requested_by,
                expires_at=now + ttl,
            )
        ]

    def request_config(
        self, *, transaction_id: str, requested_by: str, now: datetime, ttl: timedelta
    ) -> list[DomainEvent]:
        self._require_commandable()
        specs = self.compartments_spec()
        return [
            ConfigApplyRequested(
                occurred_at=now,
                transaction_id=transaction_id,
                requested_by=requested_by,
                expires_at=now + ttl,
                config_hash=self.desired_config_hash,
                heartbeat_interval_seconds=self.heartbeat_interval_seconds,
                compartments=specs,
            )
        ]

    def mark_sent(self, transaction_id: str, *, now: datetime) -> list[DomainEvent]:
        """The first PUBACK of a command; later re-sends record nothing."""
        command = self.commands.get(transaction_id)
        if command is None or command.status is not CommandStatus.PENDING:
            return []
        return [CommandSent(occurred_at=now, transaction_id=transaction_id, action=command.action)]

    def record_response(
        self,
        transaction_id: str,
        *,
        result: ResponseResult,
        now: datetime,
        error_code: str | None = None,
        message: str | None = None,
        applied_config_hash: str | None = None,
    ) -> list[DomainEvent]:
        """The device's first answer decides; a late one (after timeout/expiry) still counts."""
        command = self.commands.get(transaction_id)
        if command is None:
            raise NotFound(f"bank {self.uuid} has no command {transaction_id}")
        if command.status not in OPEN_STATUSES | LATE_ANSWER_STATUSES:
            return []
        late = command.status in LATE_ANSWER_STATUSES
        after_expiry = command.status in AFTER_EXPIRY_STATUSES
        if after_expiry and error_code == "COMMAND_EXPIRED":
            return []  # the device confirms it did not act: the expiry stands
        if result == ResponseResult.SUCCESS and command.action == "open_compartment":
            assert command.compartment_number is not None
            return [
                CompartmentOpened(
                    occurred_at=now,
                    transaction_id=transaction_id,
                    compartment_number=command.compartment_number,
                    late=late,
                    after_expiry=after_expiry,
                    message=message,
                )
            ]
        if result == ResponseResult.SUCCESS and command.action == "apply_config":
            return [
                ConfigApplied(
                    occurred_at=now,
                    transaction_id=transaction_id,
                    applied_config_hash=applied_config_hash,
                    in_sync=applied_config_hash is not None
                    and applied_config_hash.lower() == (command.config_hash or "").lower(),
                    late=late,
                    after_expiry=after_expiry,
                    message=message,
                )
            ]
        return [
            CommandFailed(
                occurred_at=now,
                transaction_id=transaction_id,
                action=command.action,
                error_code=error_code if result != ResponseResult.SUCCESS else "UNSUPPORTED",
                message=message,
                late=late,
                after_expiry=after_expiry,
            )
        ]

    def time_out(self, transaction_id: str, *, now: datetime) -> list[DomainEvent]:
        """Configs only: an open expires when it times out (one event, `CommandExpired`)."""
        command = self.commands.get(transaction_id)
        if command is None or command.status not in OPEN_STATUSES:
            return []
        if command.action == "open_compartment":
            return []
        return [
            CommandTimedOut(occurred_at=now, transaction_id=transaction_id, action=command.action)
        ]

    def expire(
        self, transaction_id: str, *, now: datetime, outcome_unknown: bool = False
    ) -> list[DomainEvent]:
        """`outcome_unknown`: the command reached the device and an answer may be lost for
        good (the caller knows: a dialect that never replays answers, a restart)."""
        command = self.commands.get(transaction_id)
        if command is None or command.status not in OPEN_STATUSES:
            return []
        return [
            CommandExpired(
                occurred_at=now,
                transaction_id=transaction_id,
                action=command.action,
                outcome_unknown=outcome_unknown and command.status is CommandStatus.SENT,
            )
        ]

    def went_offline(self, reason: str, *, now: datetime) -> list[DomainEvent]:
        if self.status != "online":
            return []
        return [LockerBankWentOffline(occurred_at=now, reason=reason)]  # type: ignore[arg-type]  # the event model validates the literal

    def came_online(self, *, now: datetime) -> list[DomainEvent]:
        if self.status not in ("provisioned", "offline"):
            return []
        return [LockerBankCameOnline(occurred_at=now)]

    def door_state_changed(
        self, number: int, state: str, *, now: datetime, event_id: str | None = None
    ) -> list[DomainEvent]:
        compartment = self.compartment(number)
        if compartment.door_state == state:
            return []
        return [
            DoorStateChanged(
                occurred_at=now,
                compartment_number=number,
                state=state,  # type: ignore[arg-type]  # the event model validates the literal
                event_id=event_id,
            )
        ]

    def qr_scanned(
        self, qr_payload: str, scanner: str, *, now: datetime, event_id: str | None = None
    ) -> list[DomainEvent]:
        self._require_exists()
        return [
            QrScanned(occurred_at=now, qr_payload=qr_payload, scanner=scanner, event_id=event_id)
        ]

    def acknowledge_alert(self, alert_id: int, note: str, *, now: datetime) -> list[DomainEvent]:
        """The caller has checked that the alert exists, belongs to this bank and is not
        acknowledged yet (alerts are a read model, not aggregate state)."""
        self._require_exists()
        try:
            note = check_note(note)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return [AlertAcknowledged(occurred_at=now, alert_id=alert_id, note=note)]

    def device_event(
        self,
        event: str,
        data: dict[str, object],
        *,
        now: datetime,
        event_id: str | None = None,
    ) -> list[DomainEvent]:
        """A documented device event without a domain rule yet: recorded as it came."""
        self._require_exists()
        return [DeviceEventRecorded(occurred_at=now, event=event, data=data, event_id=event_id)]

    # ----- queries -----------------------------------------------------------------------

    def compartment(self, number: int) -> Compartment:
        self._require_exists()
        try:
            return self.compartments[number]
        except KeyError:
            raise NotFound(
                f"bank {self.name!r} has no compartment {number} (1-{max(self.compartments)})"
            ) from None

    def _require_exists(self) -> None:
        if not self.exists:
            raise NotFound(f"no locker bank {self.uuid}")

    def _require_commandable(self) -> None:
        self._require_exists()
        if self.status not in COMMAND_ABLE:
            raise RuleViolation(
                f"bank {self.name!r} is {self.status}: commands need a provisioned bank"
            )

    def _token_problem(self, token_hmac: str, now: datetime) -> str | None:
        if self.token_hmac is None or self.token_hmac != token_hmac:
            return "token unknown or already used"
        if self.token_expires_at is not None and now >= self.token_expires_at:
            return "token expired"
        return None

    # ----- folding -----------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        """Fold one event into the state (also used when loading). An event type with
        neither a handler nor a place in `NOT_FOLDED` is a programming error, said loudly."""
        handler = _FOLDS.get(event.event_type)
        if handler is None and event.event_type not in NOT_FOLDED:
            raise TypeError(
                f"LockerBank cannot fold {event.event_type}: add _on_{event.event_type} "
                "or list it in NOT_FOLDED"
            )
        self.version += 1
        if handler is not None:
            handler(self, event)

    def _on_LockerBankCreated(self, e: LockerBankCreated) -> None:
        self.exists = True
        self.name = e.name
        self.location = e.location
        self.heartbeat_interval_seconds = e.heartbeat_interval_seconds
        self.compartments = {
            c.number: Compartment(c.number, c.slave_id, c.address) for c in e.compartments
        }
        self.dialect_choice = e.dialect

    def _on_LockerBankUpdated(self, e: LockerBankUpdated) -> None:
        self.name = e.name
        self.location = e.location
        self.heartbeat_interval_seconds = e.heartbeat_interval_seconds
        old = self.compartments
        self.compartments = {
            c.number: Compartment(
                c.number,
                c.slave_id,
                c.address,
                door_state=old[c.number].door_state if c.number in old else "unknown",
                open_transaction=old[c.number].open_transaction if c.number in old else None,
            )
            for c in e.compartments
        }
        self.dialect_choice = e.dialect

    def _on_ProvisioningTokenIssued(self, e: ProvisioningTokenIssued) -> None:
        self.token_hmac = e.token_hmac
        self.token_expires_at = e.expires_at

    def _on_LockerBankProvisioned(self, e: LockerBankProvisioned) -> None:
        if e.dialect is not None:
            self.detected_dialect = e.dialect
        self.token_hmac = None
        self.token_expires_at = None
        self.status = "provisioned"
        self.applied_config_hash = None

    def _on_CredentialsRevoked(self, e: CredentialsRevoked) -> None:
        self.status = "revoked"
        self.token_hmac = None  # a pending token would let the revoked bank back in
        self.token_expires_at = None

    def _on_CompartmentOpeningRequested(self, e: CompartmentOpeningRequested) -> None:
        self.commands[e.transaction_id] = PendingCommand(
            e.transaction_id,
            "open_compartment",
            CommandStatus.PENDING,
            compartment_number=e.compartment_number,
        )
        self.compartments[e.compartment_number].open_transaction = e.transaction_id

    def _on_ConfigApplyRequested(self, e: ConfigApplyRequested) -> None:
        self.commands[e.transaction_id] = PendingCommand(
            e.transaction_id, "apply_config", CommandStatus.PENDING, config_hash=e.config_hash
        )

    def _on_CommandSent(self, e: CommandSent) -> None:
        self.commands[e.transaction_id].status = CommandStatus.SENT

    def _finish(self, transaction_id: str, status: CommandStatus) -> None:
        command = self.commands[transaction_id]
        command.status = status
        if command.compartment_number is not None:
            compartment = self.compartments[command.compartment_number]
            if compartment.open_transaction == transaction_id:
                compartment.open_transaction = None
        if status not in LATE_ANSWER_STATUSES:
            # Decided for good: nothing more to hear; duplicates are caught by the tracker.
            del self.commands[transaction_id]

    def _on_CompartmentOpened(self, e: CompartmentOpened) -> None:
        self._finish(
            e.transaction_id, CommandStatus.LATE if e.after_expiry else CommandStatus.SUCCESS
        )
        self.compartments[e.compartment_number].door_state = "open"

    def _on_CommandFailed(self, e: CommandFailed) -> None:
        self._finish(
            e.transaction_id, CommandStatus.LATE if e.after_expiry else CommandStatus.ERROR
        )

    def _on_ConfigApplied(self, e: ConfigApplied) -> None:
        self._finish(
            e.transaction_id, CommandStatus.LATE if e.after_expiry else CommandStatus.SUCCESS
        )
        self.applied_config_hash = e.applied_config_hash

    def _on_CommandTimedOut(self, e: CommandTimedOut) -> None:
        self._finish(e.transaction_id, CommandStatus.TIMEOUT)

    def _on_CommandExpired(self, e: CommandExpired) -> None:
        self._finish(
            e.transaction_id, CommandStatus.UNKNOWN if e.outcome_unknown else CommandStatus.EXPIRED
        )

    def _on_LockerBankWentOffline(self, e: LockerBankWentOffline) -> None:
        self.status = "offline"

    def _on_LockerBankCameOnline(self, e: LockerBankCameOnline) -> None:
        self.status = "online"

    def _on_DoorStateChanged(self, e: DoorStateChanged) -> None:
        self.compartments[e.compartment_number].door_state = e.state


_FOLDS: Final[dict[str, Callable[[LockerBank, Any], None]]] = {
    name.removeprefix("_on_"): handler
    for name, handler in vars(LockerBank).items()
    if name.startswith("_on_")
}
"""Event type -> the `LockerBank._on_<event type>` that folds it."""

NOT_FOLDED: Final = frozenset(
    {
        "ProvisioningRejected",  # a refused registration changes nothing in the bank
        "QrScanned",  # recorded for the event log; no rule of the bank depends on it
        "DeviceEventRecorded",  # documented device events without a domain rule yet
        "AlertAcknowledged",  # alerts are a read model (backend.store.alert_projection)
    }
)
"""Event types the aggregate deliberately does not fold (it still counts their versions)."""


def desired_hash(
    compartments: list[CompartmentSpec], interval: int, dialect: str | None = "seed"
) -> str:
    """The config hash a bank should report after applying its mapping, in its dialect."""
    return config_hash_for(
        dialect, ((c.number, c.slave_id, c.address) for c in compartments), interval
    )


def _check_settings(
    name: str,
    location: str,
    compartments: list[CompartmentSpec],
    heartbeat_interval_seconds: int,
    dialect: str,
    *,
    detected: str | None = None,
) -> tuple[str, str]:
    """Validate a bank's settings; returns the stripped name and location."""
    name = name.strip()
    location = location.strip()
    if not name:
        raise InvalidInput("bank name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"bank name is longer than {MAX_NAME} characters")
    if len(location) > MAX_LOCATION:
        raise InvalidInput(f"location is longer than {MAX_LOCATION} characters")
    if _has_control(name) or _has_control(location):
        # NUL cannot even be stored by PostgreSQL; the rest are never meant in a name.
        raise InvalidInput("bank name and location must not contain control characters")
    if not 1 <= len(compartments) <= MAX_COMPARTMENTS:
        raise InvalidInput(f"a bank needs 1 to {MAX_COMPARTMENTS} compartments")
    numbers = [c.number for c in compartments]
    if min(numbers) < 1:
        raise InvalidInput("compartment numbers start at 1")
    # Rules between entries, or between the mapping and the dialect, cannot be told by
    # looking at one value: they are conflicts (409), not malformed input (400).
    if len(set(numbers)) != len(numbers):
        raise RuleViolation("compartment numbers must be unique")
    targets = [(c.slave_id, c.address) for c in compartments]
    if len(set(targets)) != len(targets):
        raise RuleViolation("two compartments map to the same slaveId and address")
    for spec in compartments:
        if not 0 <= spec.slave_id <= 247 or not 0 <= spec.address <= 65535:
            raise InvalidInput(
                f"compartment {spec.number}: slaveId must be 0-247 and address 0-65535"
            )
    if not 1 <= heartbeat_interval_seconds <= MAX_HEARTBEAT_INTERVAL:
        raise InvalidInput(f"heartbeat interval must be 1 to {MAX_HEARTBEAT_INTERVAL} seconds")
    if dialect not in DIALECT_CHOICES:
        raise InvalidInput(f"dialect must be one of {', '.join(DIALECT_CHOICES)}")
    if effective_dialect(dialect, detected) == "openlocker":
        for spec in compartments:
            if spec.slave_id < OPENLOCKER_MIN_SLAVE_ID:
                raise RuleViolation(
                    f"compartment {spec.number}: an openlocker bank needs slaveId >= "
                    f"{OPENLOCKER_MIN_SLAVE_ID} (its contract schema)"
                )
    return name, location


def default_compartments(count: int) -> list[CompartmentSpec]:
    """Compartments 1..count on Modbus slave 1, addresses 0..count-1."""
    if not 1 <= count <= MAX_COMPARTMENTS:
        raise InvalidInput(f"a bank needs 1 to {MAX_COMPARTMENTS} compartments")
    return [CompartmentSpec(number=n, slave_id=1, address=n - 1) for n in range(1, count + 1)]
