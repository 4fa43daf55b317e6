"""The backend's broker connection state, as the console and /healthz see it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

StateListener = Callable[["ConnectionState"], None]


class ConnectionState:
    """Whether the runtime is connected to the broker, since when, and the last error.

    Read the attributes directly; `wait_for()` awaits a state, `wait_changed()` the next
    change, and `add_listener()` registers a callback (called on the event loop).
    """

    def __init__(self) -> None:
        self.connected: bool = False
        self.last_error: str | None = None
        self.changed_at: datetime | None = None
        self.connects: int = 0
        self._listeners: list[StateListener] = []
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"ConnectionState(connected={self.connected}, last_error={self.last_error!r})"

    def as_dict(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "last_error": self.last_error,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "connects": self.connects,
        }

    def add_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call `listener(state)` after every change; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def set_connected(self, note: str | None = None) -> None:
        """A session with the broker is up; `last_error` becomes `note` (usually None)."""
        self.connects += 1
        self._set(True, note, force=True)

    def set_disconnected(self, error: str | None) -> None:
        """No session; `error` says why (None keeps the previous reason)."""
        self._set(False, error if error is not None else self.last_error)

    def _set(self, connected: bool, error: str | None, *, force: bool = False) -> None:
        if not force and connected == self.connected and error == self.last_error:
            return
        self.connected = connected
        self.last_error = error
        self.changed_at = datetime.now(UTC)
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                log.exception("connection state listener failed")

    async def wait_changed(self) -> None:
        """Return after the next change."""
        await self._changed.wait()

    async def wait_for(self, connected: bool = True, timeout: float | None = None) -> None:
        """Return once `connected` has the wanted value (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            while self.connected != connected:
                await self.wait_changed()
