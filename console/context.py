"""What every screen of the console shares: the gateway, the clock, the read-only switch,
and the live state the app keeps up to date (connectivity, event tail, bank names).

Screens get this object in their constructor; they never reach into the app for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime

from backend.domain.timeutil import Clock
from backend.gateway import ConsoleGateway
from backend.run_mode import RunMode
from backend.views import AlertView, BankView, EventView
from console.alerts import BankName
from console.heartbeats import HeartbeatHistory
from widgets.status_line import Connectivity

EVENT_TAIL = 2000


@dataclass
class ConsoleContext:
    """Dependencies and shared live state of one console session."""

    gateway: ConsoleGateway
    clock: Clock
    readonly: bool = False
    refresh_interval: float = 0.25
    run_mode: RunMode = RunMode.STANDALONE
    """`standalone` (the backend in this process) or `attach` (over HTTP)."""
    heartbeats: HeartbeatHistory = field(default_factory=HeartbeatHistory)
    names: dict[str, BankName] = field(default_factory=dict)
    banks: list[BankView] = field(default_factory=list)
    events: deque[EventView] = field(default_factory=lambda: deque(maxlen=EVENT_TAIL))
    connectivity: Connectivity = field(
        default_factory=lambda: Connectivity(broker_connected=None, database_ok=None)
    )
    position: int = 0
    """The position of the last stored event read (screens refetch when it moves)."""
    mine: set[str] = field(default_factory=set)
    """Transaction ids this console requested (their success is worth a toast)."""
    role: str = "operator"
    """What the backend lets this console do: `operator` (everything) or `app` (read and
    open compartments; attach mode with an app token). Actions beyond it are not offered."""
    open_ttl: float = 30.0
    """How long an open waits for its bank before it expires (from the backend's status)."""

    @property
    def may_administer(self) -> bool:
        """Create banks, issue tokens, revoke, push configs: an operator, not read-only."""
        return not self.readonly and self.role != "app"

    def __post_init__(self) -> None:
        self.connectivity = replace(
            self.connectivity,
            run_mode=self.run_mode,
            operator=self.gateway.actor,
            readonly=self.readonly,
        )

    @property
    def unreachable_since(self) -> datetime | None:
        """When the backend stopped answering (None while it answers)."""
        return self.connectivity.unreachable_since

    def backend_failed(self) -> None:
        """A call to the backend failed: from now on nothing it said before is current."""
        since = self.connectivity.unreachable_since or self.clock.now()
        self.connectivity = replace(self.connectivity, stale=True, unreachable_since=since)

    def count_alerts(self, open_alerts: list[AlertView] | None) -> None:
        """Keep the number of open, unacknowledged alerts for the status line (None: a list
        that is not just the open ones, nothing learned)."""
        if open_alerts is None:
            return
        unseen = sum(1 for a in open_alerts if a.state == "open" and a.acknowledged_at is None)
        self.connectivity = replace(self.connectivity, alerts=unseen)

    def remember_banks(self, banks: list[BankView]) -> None:
        """Keep the latest bank list (palette commands, names) and feed the heartbeat history."""
        self.banks = banks
        for bank in banks:
            self.names[bank.uuid] = BankName(bank.name, bank.location)
        self.heartbeats.observe(banks)

    def name_of(self, uuid: str) -> str:
        """The bank's name, or the start of its uuid when unknown."""
        known = self.names.get(uuid)
        return known.name if known else uuid[:8]

    def plain_names(self) -> dict[str, str]:
        """uuid -> name, for widgets."""
        return {uuid: bank.name for uuid, bank in self.names.items()}
