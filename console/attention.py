"""What needs an operator's attention, derived from what the console already has: the
banks' read model and the tail of the stored-event log (no Textual, no I/O).

Rank (lowest first, the Fleet's default order): offline, jammed, drifted, failing,
then the rest (waiting for the device, ok). Commands merely pending do not rank: they
come and go many times a minute, and a row must not jump for each of them. A door is *jammed* when
its last open command failed with a jam code and it has not opened since; a bank is
*failing* when a command failed, timed out or expired after its last success.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backend.domain.command_status import CommandStatus
from backend.search import natural_key
from backend.views import BankView, EventView, TransactionView

OFFLINE, JAMMED, DRIFTED, FAILING, WAITING, OK = range(6)
RANK_WORDS = ("offline", "jammed", "drifted", "failing", "waiting", "ok")
FAILURES = frozenset({"CommandFailed", "CommandTimedOut", "CommandExpired"})
MAX_DOORS_REMEMBERED = 20_000


def is_jam(error_code: str | None, message: str | None = None) -> bool:
    """Whether a failed open says the door is jammed (`DOOR_JAMMED`, `jam` ...)."""
    return "JAM" in f"{error_code or ''} {message or ''}".upper()


@dataclass
class Troubles:
    """Per-bank trouble seen in the event tail."""

    jammed: dict[str, set[int]] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)
    position: int = 0
    """The last event position fed in."""
    _doors: dict[str, int] = field(default_factory=dict)  # transaction id -> compartment

    @classmethod
    def from_events(cls, events: Iterable[EventView]) -> Troubles:
        out = cls()
        out.feed(events)
        return out

    def feed(self, events: Iterable[EventView]) -> bool:
        """Take in the events after `position` (others are skipped); True when a bank's
        trouble changed (its rank may have)."""
        before = self._look()
        out, doors = self, self._doors
        for event in events:
            if event.position <= out.position:
                continue
            out.position = event.position
            bank, payload, kind = event.aggregate_uuid, event.payload, event.event_type
            if kind == "CompartmentOpeningRequested":
                doors[str(payload.get("transaction_id"))] = int(payload["compartment_number"])
            elif kind == "CompartmentOpened":
                out.jammed.get(bank, set()).discard(int(payload["compartment_number"]))
                out.failing.pop(bank, None)
            elif kind == "ConfigApplied":
                out.failing.pop(bank, None)
            elif kind in FAILURES:
                out.failing[bank] = out.failing.get(bank, 0) + 1
                number = doors.get(str(payload.get("transaction_id")))
                if (
                    kind == "CommandFailed"
                    and number is not None
                    and is_jam(payload.get("error_code"), payload.get("message"))
                ):
                    out.jammed.setdefault(bank, set()).add(number)
        if len(doors) > MAX_DOORS_REMEMBERED:
            for key in list(doors)[: len(doors) // 2]:
                del doors[key]
        return self._look() != before

    def _look(self) -> tuple[frozenset[str], frozenset[tuple[str, int]]]:
        jams = frozenset((bank, n) for bank, numbers in self.jammed.items() for n in numbers)
        return frozenset(self.failing), jams


def jammed_doors(transactions: Iterable[TransactionView]) -> set[int]:
    """Compartments whose latest finished open command failed with a jam (one bank's
    transactions, any order)."""
    latest: dict[int, TransactionView] = {}
    for txn in transactions:
        if txn.action != "open_compartment" or txn.compartment_number is None:
            continue
        if txn.status not in (CommandStatus.SUCCESS, CommandStatus.ERROR):
            continue
        known = latest.get(txn.compartment_number)
        if known is None or txn.requested_at > known.requested_at:
            latest[txn.compartment_number] = txn
    return {
        number
        for number, txn in latest.items()
        if txn.status is CommandStatus.ERROR and is_jam(txn.error_code, txn.message)
    }


def rank(bank: BankView, troubles: Troubles) -> int:
    """The bank's attention rank (see the module doc)."""
    if bank.status == "offline":
        return OFFLINE
    if troubles.jammed.get(bank.uuid):
        return JAMMED
    if bank.config_state == "drifted":
        return DRIFTED
    if troubles.failing.get(bank.uuid):
        return FAILING
    if bank.status in ("unprovisioned", "provisioned"):
        return WAITING
    return OK


def by_name(banks: Iterable[BankView]) -> list[BankView]:
    """Banks in natural name order (`Demo 9` before `Demo 10`), then location, uuid."""
    return sorted(banks, key=lambda b: (natural_key(b.name), natural_key(b.location), b.uuid))


def by_attention(banks: Iterable[BankView], troubles: Troubles) -> list[BankView]:
    """Banks, those needing attention first; ties in natural name order."""
    return sorted(
        banks,
        key=lambda b: (rank(b, troubles), natural_key(b.name), natural_key(b.location), b.uuid),
    )
