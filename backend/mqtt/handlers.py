"""One handler per topic kind: validate with the contract models, then apply.

`handle_lane()` gets the waiting messages of one lane in arrival order. Each is
validated first (unknown bank, bad JSON, wrong types, unknown action or event,
oversized, invalid UTF-8: refused through the Rejector); then runs of heartbeats
and of command responses go to their batchers, so many banks share one store
transaction, while everything else is applied one by one. A store failure is
retried with backoff and then given up with a clear error (DESIGN section 16): the
device is asked again for an unanswered command (section 9).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from backend.device_service import DeviceService, HeartbeatIn
from backend.domain.acl import valid_identity
from backend.domain.command_status import CommandStatus
from backend.domain.contract import (
    RECORDED_EVENTS,
    CommandResponse,
    CompartmentsSnapshot,
    ConnectionLost,
    ContractError,
    DeviceEvent,
    DoorStateData,
    Heartbeat,
    QrScannedData,
    RegisterRequest,
    decode_json,
    parse,
    parse_heartbeat,
    parse_state,
    snapshot_entries,
)
from backend.domain.dialect import dialect_of_registration
from backend.domain.errors import DomainError
from backend.domain.outcomes import Disposition, Outcome, RegistrationResult
from backend.domain.topics import TopicKind
from backend.log_throttle import LogThrottle
from backend.mqtt.batcher import Batcher
from backend.mqtt.inbound import INVALID_LANE, REGISTER_LANE, Inbound
from backend.mqtt.known_banks import KnownBanks
from backend.mqtt.metrics import Metrics
from backend.mqtt.rejects import Rejector
from backend.store.errors import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

Arrival = asyncio.Future[bool] | None
"""What a heartbeat's write returns: None, or the future of its bank's coming online."""

STORE_ERRORS: tuple[type[BaseException], ...] = (StoreError, OSError)
UNKNOWN_BANK = "unknown bank uuid"


@dataclass(frozen=True)
class Registration:
    item: Inbound
    client_id: str
    dialect: str  # what the registration's form suggests


@dataclass(frozen=True)
class Response:
    item: Inbound
    response: CommandResponse


@dataclass(frozen=True)
class Event:
    item: Inbound
    event: DeviceEvent


@dataclass(frozen=True)
class Beat:
    item: Inbound
    heartbeat: HeartbeatIn


@dataclass(frozen=True)
class LastWill:
    item: Inbound


@dataclass(frozen=True)
class DoorSnapshot:
    item: Inbound
    doors: list[tuple[int, str]]
    refused: list[str]  # reasons of entries refused alone


@dataclass(frozen=True)
class Ignored:
    """Valid, but nothing to do (a retained last will, upstream's `online` status)."""

    item: Inbound
    why: str


Work = Registration | Response | Event | Beat | LastWill | DoorSnapshot | Ignored


class InboundHandlers:
    """Validation and application of inbound messages, lane by lane."""

    def __init__(
        self,
        devices: DeviceService,
        metrics: Metrics,
        rejector: Rejector,
        banks: KnownBanks,
        *,
        heartbeats: Batcher[HeartbeatIn, Arrival],
        arrivals: Batcher[str, bool],
        responses: Batcher[tuple[str, CommandResponse, bytes], Outcome],
        on_outbox_work: Callable[[], None] = lambda: None,
        store_retries: int = 5,
        store_retry_initial: float = 0.1,
    ) -> None:
        self.devices = devices
        self.metrics = metrics
        self.rejector = rejector
        self.banks = banks
        self.heartbeats = heartbeats
        self.arrivals = arrivals
        self.responses = responses
        self._on_outbox_work = on_outbox_work
        self._store_retries = store_retries
        self._store_retry_initial = store_retry_initial
        # Per-message warnings an attacker (or a store outage) can repeat at will.
        self._rate_limited_log = LogThrottle("rate-limited registrations", logger=log)
        self._retry_log = LogThrottle("store retries", logger=log)
        self._given_up_log = LogThrottle("messages given up", logger=log)

    def flush_logs(self) -> None:
        """Report what the log throttles held back (at shutdown)."""
        self.rejector.flush_log()
        for throttle in (self._rate_limited_log, self._retry_log, self._given_up_log):
            throttle.flush()

    # ----- entry point -------------------------------------------------------------------

    async def handle_lane(self, lane: str, items: list[Inbound]) -> None:
        """Validate and apply the messages of one lane, in order."""
        if lane == INVALID_LANE:
            for item in items:
                await self._reject(item, item.problem or "topic not accepted")
            return
        known = lane == REGISTER_LANE or await self.banks.known(lane)
        work: list[Work] = []
        for item in items:
            if not known:
                await self._reject(item, UNKNOWN_BANK)
                continue
            try:
                work.append(self.validate(item))
            except ContractError as exc:
                await self._reject(item, str(exc))
        await self._apply(work)

    async def _reject(self, item: Inbound, reason: str) -> None:
        await self.rejector.reject(item.topic, item.label, item.payload, reason)

    # ----- validation --------------------------------------------------------------------

    def validate(self, item: Inbound) -> Work:
        """Parse the payload for its topic kind; ContractError with the reason if invalid."""
        return validate_inbound(item)

    # ----- application -------------------------------------------------------------------

    async def _apply(self, work: list[Work]) -> None:
        index = 0
        while index < len(work):
            first = work[index]
            end = index + 1
            if isinstance(first, Beat | Response):
                while end < len(work) and type(work[end]) is type(first):
                    end += 1
            run = work[index:end]
            index = end
            if isinstance(first, Beat):
                await self._heartbeats([w for w in run if isinstance(w, Beat)])
            elif isinstance(first, Response):
                await self._responses([w for w in run if isinstance(w, Response)])
            else:
                await self._one(first)

    async def _heartbeats(self, beats: list[Beat]) -> None:
        # Coming online records an event, which wakes the relay for re-asks and apply_config.
        arrivals = await self._store(
            "heartbeats", len(beats), lambda: self.heartbeats.submit([b.heartbeat for b in beats])
        )
        waiting = {
            b.heartbeat.bank_uuid: a for b, a in zip(beats, arrivals or (), strict=False) if a
        }
        if waiting:  # done when their banks are online; a failed one is tried again here
            first = asyncio.gather(*waiting.values())
            tries = iter([first])
            await self._store(
                "arrivals",
                len(waiting),
                lambda: next(tries, None) or self.arrivals.submit(list(waiting)),
            )

    async def _responses(self, responses: list[Response]) -> None:
        outcomes = await self._store(
            "responses",
            len(responses),
            lambda: self.responses.submit(
                [(r.item.key, r.response, r.item.payload) for r in responses]
            ),
        )
        if outcomes is None:
            return
        for work, outcome in zip(responses, outcomes, strict=True):
            refused = self.counted(work, outcome)
            if refused is not None:
                await self._reject(work.item, refused)

    def counted(self, work: Response, outcome: Outcome) -> str | None:
        """Count a response's outcome; the reason to refuse it with, if it was refused."""
        if outcome.disposition is Disposition.APPLIED:
            self.metrics.commands[work.response.result] += 1
            if outcome.late:
                self.metrics.commands[CommandStatus.LATE] += 1
            return None
        if outcome.disposition is Disposition.DUPLICATE:
            self.metrics.duplicates["response"] += 1
            return None
        return outcome.reason or "response refused"

    async def reject(self, item: Inbound, reason: str) -> None:
        """Store a message as rejected, with its reason."""
        await self._reject(item, reason)

    async def _one(self, work: Work) -> None:
        if isinstance(work, Registration):
            await self._register(work)
        elif isinstance(work, Event):
            await self._event(work)
        elif isinstance(work, LastWill):
            bank = work.item.key
            if await self._store("last will", 1, lambda: self.devices.record_last_will(bank)):
                self.metrics.last_wills += 1
        elif isinstance(work, DoorSnapshot):
            unknown = await self._guarded(
                work.item,
                lambda: self.devices.record_door_snapshot(work.item.key, work.doors),
            )
            refused = list(work.refused)
            if unknown:
                numbers = ", ".join(map(str, unknown[:20]))
                refused.append(f"compartment(s) {numbers}: not compartments of this bank")
            if refused:
                # the bad entries are refused alone (one record); the rest was applied
                await self._reject(
                    work.item, ("snapshot entries refused: " + "; ".join(refused))[:500]
                )
        elif isinstance(work, Ignored):
            log.debug("ignored %s on %s: %s", work.item.label, work.item.key, work.why)

    async def _register(self, work: Registration) -> None:
        token = work.item.key
        result = await self._store(
            "registration",
            1,
            lambda: self.devices.register(token, work.client_id, dialect=work.dialect),
        )
        if result is None:
            return
        self.metrics.registrations[result] += 1
        if result is RegistrationResult.RATE_LIMITED:
            if self._rate_limited_log.allow():
                log.warning(
                    "registration attempts rate limited for client id %.64r", work.client_id
                )
        else:
            self._on_outbox_work()  # the reply is in the outbox

    async def _event(self, work: Event) -> None:
        result = await self._guarded(
            work.item, lambda: self.devices.record_event(work.item.key, work.event)
        )
        if result is None or result.disposition is Disposition.APPLIED:
            return
        if result.disposition is Disposition.DUPLICATE:
            self.metrics.duplicates["event"] += 1
        else:
            await self._reject(work.item, result.reason or "event refused")

    async def _guarded(self, item: Inbound, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run a store call; a domain refusal (unknown compartment, ...) rejects the message."""
        try:
            return await self._store(item.label, 1, call, reraise_domain=True)
        except DomainError as exc:
            await self._reject(item, str(exc))
            return None

    async def _store(
        self,
        what: str,
        count: int,
        call: Callable[[], Awaitable[T]],
        *,
        reraise_domain: bool = False,
    ) -> T | None:
        """Call the store, retrying while it fails (locked, unreachable); None if given up."""
        delay = self._store_retry_initial
        for attempt in range(1, self._store_retries + 1):
            try:
                return await call()
            except DomainError:
                if reraise_domain:
                    raise
                log.exception("%s refused by the domain", what)
                self.metrics.handler_errors += count
                return None
            except STORE_ERRORS as exc:
                if attempt == self._store_retries:
                    if self._given_up_log.allow():
                        log.error(
                            "giving up on %d %s after %d attempts: %s",
                            count,
                            what,
                            attempt,
                            exc.__class__.__name__,
                        )
                    self.metrics.handler_errors += count
                    return None
                if self._retry_log.allow():
                    log.warning("store failed for %s (%s); retrying", what, exc.__class__.__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("handling %d %s failed", count, what)
                self.metrics.handler_errors += count
                return None
        return None


# ----- validation (pure: the contract tests call it on upstream examples) ------------


def validate_inbound(item: Inbound) -> Work:
    """Parse the payload for its topic kind; ContractError with the reason if invalid."""
    kind = item.kind
    raw = item.payload
    if kind is TopicKind.REGISTER:
        request = parse(RegisterRequest, raw)
        if not valid_identity(request.client_id):
            raise ContractError("client_id: not a valid MQTT identity (/ + # NUL or control)")
        return Registration(
            item, request.client_id, dialect_of_registration(request.message_id is not None)
        )
    if kind in (TopicKind.RESPONSE, TopicKind.LEGACY_STATUS):
        return Response(item, parse(CommandResponse, raw))
    if kind is TopicKind.EVENT:
        event = parse(DeviceEvent, raw)
        if event.event == "door_state_changed":
            parse(DoorStateData, event.data)
        elif event.event == "qr_scanned":
            parse(QrScannedData, event.data)
        elif event.event not in RECORDED_EVENTS:
            raise ContractError(f"event: unknown event {event.event[:40]!r}")
        return Event(item, event)
    if kind is TopicKind.STATE:
        state = parse_state(raw)
        if isinstance(state, Heartbeat):
            return _beat(item, state)
        return _will(item)
    if kind is TopicKind.STATE_HEARTBEAT:
        return _beat(item, parse_heartbeat(raw))
    if kind is TopicKind.STATE_COMPARTMENTS:
        snapshot = parse(CompartmentsSnapshot, raw)
        good, refused = snapshot_entries(snapshot)
        if refused and not good:
            raise ContractError("; ".join(refused)[:200])
        doors: list[tuple[int, str]] = [(c.compartment_number, c.door_state) for c in good]
        return DoorSnapshot(item, doors, refused)
    if kind is TopicKind.STATE_CONNECTION:
        data = decode_json(raw)
        if data.get("status") == "online":
            return Ignored(item, "connection status online (a heartbeat follows)")
        if data.get("state") == "heartbeat" or "uptime_seconds" in data:
            return _beat(item, parse_heartbeat(data))
        parse(ConnectionLost, data)
        return _will(item)
    raise ContractError(f"no handler for topic kind {kind}")


def _beat(item: Inbound, heartbeat: Heartbeat) -> Beat:
    return Beat(item, HeartbeatIn(item.key, heartbeat, item.received_at, item.retained))


def _will(item: Inbound) -> Work:
    if item.retained:
        # Replayed at subscribe time: evidence from the past. Silence is caught by the
        # heartbeat timeout if the device really is gone.
        return Ignored(item, "retained last will")
    return LastWill(item)
