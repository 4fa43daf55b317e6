"""When this process last heard a heartbeat from each bank, at receive time.

Liveness in the store is written by the heartbeat batches, which can fall behind the
receive side under load (a fleet reconnecting after a restart). The sweep must not call a
bank silent whose heartbeat is already here, waiting in a lane or a batch: that set banks
offline while their devices heartbeated, and every next heartbeat brought them back
(flapping, which cost more writes and fell further behind). Only non-retained
heartbeats count: a retained one may be old.
"""

from __future__ import annotations

from datetime import datetime

from backend.domain.contract import ContractError, Heartbeat, parse_state
from backend.domain.topics import TopicKind
from backend.mqtt.inbound import Inbound


class HeardFrom:
    """bank uuid -> receive time of its newest live heartbeat (one entry per bank)."""

    def __init__(self) -> None:
        self._at: dict[str, datetime] = {}

    def observe(self, item: Inbound) -> None:
        if item.retained or item.problem is not None:
            return
        if item.kind is TopicKind.STATE_HEARTBEAT:
            self._at[item.key] = item.received_at
        elif item.kind is TopicKind.STATE:
            try:
                beat = isinstance(parse_state(item.payload), Heartbeat)
            except ContractError:
                return
            if beat:
                self._at[item.key] = item.received_at
            else:
                self._at.pop(item.key, None)  # a last will: gone, not alive
        elif item.kind is TopicKind.STATE_CONNECTION:
            self._at.pop(item.key, None)

    def heartbeat(self, bank_uuid: str, received_at: datetime) -> None:
        """A live (not retained) heartbeat, already parsed by the caller."""
        self._at[bank_uuid] = received_at

    def get(self, bank_uuid: str) -> datetime | None:
        return self._at.get(bank_uuid)
