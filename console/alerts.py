"""What deserves a toast: derived from stored events after a position and from `status()`.

A toast is a passing notice on this screen; an *alert* (backend.domain.alerts) is the
stored thing an operator acknowledges. This module only makes toasts.

Pure functions (no Textual, no I/O): the app feeds them events and the transactions
those events refer to, and shows what comes back. A burst (a broker restart taking
300 banks offline) becomes one summary toast instead of 300.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from backend.gateway import SystemStatus
from backend.views import EventView, TransactionView

Severity = Literal["information", "warning", "error"]
BURST = 4  # more alerts of one kind than this in one batch are summarised

# Events that end a command badly, and those that need the transaction to be described.
FAILURES = frozenset({"CommandFailed", "CommandTimedOut", "CommandExpired"})
OUTCOMES = FAILURES | {"CompartmentOpened", "ConfigApplied"}


@dataclass(frozen=True)
class Toast:
    """One toast: how bad, a short title and one clear sentence."""

    severity: Severity
    title: str
    message: str
    kind: str = ""


@dataclass(frozen=True)
class BankName:
    """How a bank is named in toasts."""

    name: str
    location: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.location})" if self.location else self.name


def transactions_needed(events: Sequence[EventView], mine: set[str]) -> list[str]:
    """Transaction ids whose details the alerts for these events need."""
    out: list[str] = []
    for event in events:
        tid = str(event.payload.get("transaction_id", ""))
        if not tid:
            continue
        if event.event_type in FAILURES or (event.event_type in OUTCOMES and tid in mine):
            out.append(tid)
    return out


def _what(txn: TransactionView | None, action: str) -> str:
    if txn is not None and txn.action == "open_compartment":
        return f"Opening compartment {txn.compartment_number}"
    if (txn.action if txn else action) == "apply_config":
        return "Config push"
    return "Command"


def event_alert(
    event: EventView,
    names: Mapping[str, BankName],
    transactions: Mapping[str, TransactionView],
    mine: set[str],
) -> Toast | None:
    """The toast for one event, or None when it does not deserve one."""
    bank = names.get(event.aggregate_uuid, BankName(event.aggregate_uuid[:8]))
    tid = str(event.payload.get("transaction_id", ""))
    txn = transactions.get(tid)
    what = _what(txn, str(event.payload.get("action", "")))
    kind = event.event_type
    if kind == "LockerBankWentOffline":
        why = "last will" if event.payload.get("reason") == "last_will" else "no heartbeat"
        return Toast("warning", "Bank offline", f"{bank} went offline ({why}).", kind)
    if kind == "CommandFailed":
        code = event.payload.get("error_code") or "error"
        detail = event.payload.get("message")
        text = f"{what} on {bank} failed: {code}" + (f" — {detail}" if detail else "") + "."
        return Toast("error", "Command failed", text, kind)
    if kind == "CommandTimedOut":
        return Toast("error", "Command timed out", f"{what} on {bank} got no answer.", kind)
    if kind == "CommandExpired" and event.payload.get("outcome_unknown"):
        text = f"{what} on {bank}: outcome unknown (the answer is lost) - check the door."
        return Toast("error", "Outcome unknown", text, kind)
    if kind == "CommandExpired":
        text = f"{what} on {bank} expired; it will not be executed."
        return Toast("warning", "Command expired", text, kind)
    if kind == "CompartmentOpened" and (
        event.payload.get("after_expiry") or event.payload.get("late")
    ):
        number = event.payload.get("compartment_number")
        text = f"Compartment {number} on {bank} opened AFTER its open expired - check the door."
        return Toast("error", "Late execution", text, "LateExecution")
    if kind in ("CompartmentOpened", "ConfigApplied") and tid in mine and txn is not None:
        latency = f" in {txn.latency_seconds:.2f}s" if txn.latency_seconds is not None else ""
        if kind == "CompartmentOpened":
            text = f"Compartment {txn.compartment_number} on {bank} opened{latency}."
        else:
            state = "in sync" if event.payload.get("in_sync") else "drifted"
            text = f"{bank} applied its config{latency}: {state}."
        return Toast("information", "Done", text, kind)
    return None


SUMMARY: dict[str, tuple[Severity, str, str]] = {
    "LockerBankWentOffline": ("warning", "Banks offline", "{n} banks went offline."),
    "CommandFailed": ("error", "Commands failed", "{n} commands failed."),
    "CommandTimedOut": ("error", "Commands timed out", "{n} commands got no answer."),
    "CommandExpired": ("warning", "Commands expired", "{n} commands expired unexecuted."),
}


def event_alerts(
    events: Sequence[EventView],
    names: Mapping[str, BankName],
    transactions: Mapping[str, TransactionView],
    mine: set[str],
) -> list[Toast]:
    """Alerts for a batch of events, bursts of one kind summarised into one."""
    alerts = [a for e in events if (a := event_alert(e, names, transactions, mine)) is not None]
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert.kind] = counts.get(alert.kind, 0) + 1
    out: list[Toast] = []
    summarised: set[str] = set()
    for alert in alerts:
        n = counts[alert.kind]
        if n > BURST and alert.kind in SUMMARY:
            if alert.kind not in summarised:
                severity, title, text = SUMMARY[alert.kind]
                out.append(Toast(severity, title, text.format(n=n), alert.kind))
                summarised.add(alert.kind)
            continue
        out.append(alert)
    return out


def status_alerts(
    before: SystemStatus | None, after: SystemStatus, *, was_up: bool = True
) -> list[Toast]:
    """Toasts for connectivity changes (not for the state found at start). `was_up`: the
    broker has been connected at some point, so a reconnection is news ("back")."""
    if before is None:
        return []
    out: list[Toast] = []
    if before.broker_connected and not after.broker_connected:
        detail = f": {after.broker_detail}" if after.broker_detail else ""
        out.append(Toast("error", "Broker disconnected", f"The broker connection dropped{detail}."))
    elif not before.broker_connected and after.broker_connected and was_up:
        out.append(Toast("information", "Broker connected", "The broker connection is back."))
    if "store_unwritable" in after.conditions and "store_unwritable" not in before.conditions:
        text = "Writes to the store fail on this backend instance: commands are not recorded."
        out.append(Toast("error", "Store unwritable", text))
    elif "store_unwritable" in before.conditions and "store_unwritable" not in after.conditions:
        out.append(Toast("information", "Store writable", "Writes to the store work again."))
    if before.database_ok and not after.database_ok:
        out.append(Toast("error", "Database unreachable", "The database does not answer."))
    elif not before.database_ok and after.database_ok:
        out.append(Toast("information", "Database ok", "The database answers again."))
    return out
