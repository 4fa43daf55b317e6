"""The physical side of a simulated locker bank: locks, door sensors, and users.

A `Hardware` outlives the controller software: a crash of the IoT client does
not undo an actuation nor stop a user from closing a door. It therefore also
keeps the test-facing record of hardware actions (`executed`, one count per
`transaction_id`), which must never exceed one however often a command is
delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Literal

DoorState = Literal["open", "closed"]
DoorListener = Callable[[int, DoorState], None]


class Hardware:
    """Lock actuators and door sensors of one bank, with users closing doors after a dwell.

    dwell_seconds: how long a user leaves a door open before closing it;
    None: doors stay open until `close_door` is called.
    """

    def __init__(self, compartments: Iterable[int], *, dwell_seconds: float | None) -> None:
        self.doors: dict[int, DoorState] = dict.fromkeys(compartments, "closed")
        self.dwell_seconds = dwell_seconds
        self.executed: dict[str, int] = {}
        self.actuations = 0
        self.jams = 0
        self._listener: DoorListener | None = None
        self._unreported: list[tuple[int, DoorState]] = []
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def attach(self, listener: DoorListener | None) -> None:
        """Who hears the door sensors (the controller while it runs, None while it is down).

        Changes that happened while nobody listened are reported to the next listener,
        as a controller reads its sensors when it boots.
        """
        self._listener = listener
        if listener is not None:
            pending, self._unreported = self._unreported, []
            for compartment, state in pending:
                listener(compartment, state)

    def has(self, compartment: int) -> bool:
        return compartment in self.doors

    def record(self, transaction_id: str) -> None:
        """Count one hardware action for a transaction."""
        self.executed[transaction_id] = self.executed.get(transaction_id, 0) + 1

    def open(self, transaction_id: str, compartment: int, *, jammed: bool) -> bool:
        """Pulse the lock of one compartment; True if the door opened.

        A jammed lock is still an actuation (it is counted) but the door stays closed.
        """
        self.record(transaction_id)
        self.actuations += 1
        if jammed:
            self.jams += 1
            return False
        self._set(compartment, "open")
        if self.dwell_seconds is not None:
            self._schedule_close(compartment, self.dwell_seconds)
        return True

    def configure(self, compartments: Iterable[int]) -> None:
        """Adopt a new compartment numbering; unknown doors appear closed, gone ones vanish."""
        wanted = list(compartments)
        for number in [n for n in self.doors if n not in wanted]:
            timer = self._timers.pop(number, None)
            if timer is not None:
                timer.cancel()
            del self.doors[number]
        for number in wanted:
            self.doors.setdefault(number, "closed")

    def close_door(self, compartment: int) -> None:
        """A user closes a door now."""
        timer = self._timers.pop(compartment, None)
        if timer is not None:
            timer.cancel()
        if self.doors.get(compartment) == "open":
            self._set(compartment, "closed")

    def open_doors(self) -> list[int]:
        return sorted(n for n, s in self.doors.items() if s == "open")

    def shutdown(self) -> None:
        """Cancel pending door closings (the simulation ends)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _schedule_close(self, compartment: int, delay: float) -> None:
        old = self._timers.pop(compartment, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[compartment] = loop.call_later(delay, self._timer_close, compartment)

    def _timer_close(self, compartment: int) -> None:
        self._timers.pop(compartment, None)
        if self.doors.get(compartment) == "open":
            self._set(compartment, "closed")

    def _set(self, compartment: int, state: DoorState) -> None:
        if self.doors.get(compartment) == state:
            return
        self.doors[compartment] = state
        if self._listener is not None:
            self._listener(compartment, state)
        else:
            self._unreported.append((compartment, state))
