"""Counters of the MQTT runtime, read by /metrics and the console.

Plain integers and `Counter`s updated on the event loop (no locks needed);
`snapshot()` copies them into a JSON-ready dict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metrics:
    """What the runtime has seen and done since it started."""

    messages: Counter[str] = field(default_factory=Counter)
    """Inbound messages by topic kind (`register`, `response`, `state/heartbeat`, ...)."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Rejected inbound messages by topic kind (`invalid_topic` when the topic is unknown)."""
    duplicates: Counter[str] = field(default_factory=Counter)
    """Duplicates recognised by the store: `response` (same transaction) or `event` (event_id)."""
    commands: Counter[str] = field(default_factory=Counter)
    """Command outcomes: success, error, late, timeout, expired, expired_unsent, reasked."""
    registrations: Counter[str] = field(default_factory=Counter)
    """Provisioning requests by result: success, error, rate_limited."""
    published: Counter[str] = field(default_factory=Counter)
    """Outbox rows published (after PUBACK) by kind: command, provisioning_reply."""
    publish_failures: int = 0
    heartbeats_taken: int = 0
    heartbeats_ignored: int = 0
    """Heartbeats not taken as life: stale retained ones, unknown or unprovisioned banks."""
    last_wills: int = 0
    """Last wills that set a bank offline."""
    banks_offline: int = 0
    """Banks the sweeper set offline for silence."""
    batches: Counter[str] = field(default_factory=Counter)
    batch_items: Counter[str] = field(default_factory=Counter)
    handler_errors: int = 0
    """Messages given up after the store kept failing (DESIGN section 16)."""
    connects: int = 0
    disconnects: int = 0
    probe_failures: int = 0
    """Self-probes that did not come back (each one forced a reconnect)."""

    def reject(self, kind: str) -> None:
        self.rejected[kind] += 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter, JSON-ready."""
        return {
            "messages": dict(self.messages),
            "rejected": dict(self.rejected),
            "duplicates": dict(self.duplicates),
            "commands": dict(self.commands),
            "registrations": dict(self.registrations),
            "published": dict(self.published),
            "publish_failures": self.publish_failures,
            "heartbeats_taken": self.heartbeats_taken,
            "heartbeats_ignored": self.heartbeats_ignored,
            "last_wills": self.last_wills,
            "banks_offline": self.banks_offline,
            "batches": dict(self.batches),
            "batch_items": dict(self.batch_items),
            "handler_errors": self.handler_errors,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "probe_failures": self.probe_failures,
        }
