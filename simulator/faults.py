"""Fault injection for simulated devices: what can go wrong, and the dice that decide it.

`Faults` is a plain description (rates, delays, skew) that can be shared by a
whole fleet or set per device. `FaultDice` rolls against it with a seeded
`random.Random`, so the same seed and the same sequence of commands give the
same faults on every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Literal

CrashPoint = Literal["before_action", "after_action", "before_response"]
"""Where a command handler can crash: after marking the command in flight but
before the hardware acts, after the hardware acted, or after the response was
stored but before it was sent."""

CRASH_POINTS: tuple[CrashPoint, ...] = ("before_action", "after_action", "before_response")


@dataclass(frozen=True)
class Faults:
    """How badly a device behaves. All rates are probabilities in [0, 1].

    duplicate_rate: each response or event is sent again with this
        probability, repeatedly (so 2, 3, ... copies), at most `max_duplicates`
        extra copies.
    drop_rate: a command is ignored entirely, as if it never arrived (no
        action, no response, nothing remembered).
    lose_response_rate: the command is executed and its response stored, but
        the response is never sent (a re-ask gets the stored one).
    jam_rate: an open fails with `DOOR_JAMMED`; the door stays closed.
    latency_seconds, latency_jitter_seconds: delay before a response is sent
        (uniform in latency +- jitter, never negative).
    clock_skew_seconds: the device clock runs this far ahead (negative:
        behind); used for timestamps and for the expiry check.
    crash_rate: per command, the device crashes mid-command (at a random
        crash point, after the command was marked in flight).
    restart_after_crash_seconds: after an injected crash the device starts
        again after this delay; None leaves it down.
    connection_drop_mean_seconds: mean time between abrupt network losses
        (exponential); the device stays up and reconnects. None: never.
    """

    duplicate_rate: float = 0.0
    max_duplicates: int = 3
    drop_rate: float = 0.0
    lose_response_rate: float = 0.0
    jam_rate: float = 0.0
    latency_seconds: float = 0.0
    latency_jitter_seconds: float = 0.0
    clock_skew_seconds: float = 0.0
    crash_rate: float = 0.0
    restart_after_crash_seconds: float | None = None
    connection_drop_mean_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "drop_rate", "lose_response_rate", "jam_rate", "crash_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.max_duplicates < 0:
            raise ValueError("max_duplicates must not be negative")
        if self.latency_seconds < 0 or self.latency_jitter_seconds < 0:
            raise ValueError("latency must not be negative")
        if self.connection_drop_mean_seconds is not None and self.connection_drop_mean_seconds <= 0:
            raise ValueError("connection_drop_mean_seconds must be positive")

    @property
    def any(self) -> bool:
        """True when anything differs from a well-behaved device."""
        return self != Faults()

    def with_(self, **changes: float | int | None) -> Faults:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]  # fields() checks names

    @classmethod
    def from_spec(cls, spec: str) -> Faults:
        """Parse `"duplicate_rate=0.3,latency_seconds=0.2"` (short names allowed:
        duplicate, drop, lose, jam, latency, jitter, skew, crash, restart, drops).

        Meant for command lines; an empty spec is no faults.
        """
        aliases = {
            "duplicate": "duplicate_rate",
            "drop": "drop_rate",
            "lose": "lose_response_rate",
            "jam": "jam_rate",
            "latency": "latency_seconds",
            "jitter": "latency_jitter_seconds",
            "skew": "clock_skew_seconds",
            "crash": "crash_rate",
            "restart": "restart_after_crash_seconds",
            "drops": "connection_drop_mean_seconds",
        }
        known = {f.name for f in fields(cls)}
        values: dict[str, float | int | None] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, raw = part.partition("=")
            key = aliases.get(key.strip(), key.strip())
            if not sep or key not in known:
                raise ValueError(f"unknown fault setting {part!r}")
            raw = raw.strip()
            if raw.lower() in ("none", ""):
                values[key] = None
            elif key == "max_duplicates":
                values[key] = int(raw)
            else:
                values[key] = float(raw)
        return cls(**values)  # type: ignore[arg-type]  # names checked against fields() above


class FaultDice:
    """Rolls a device's faults with its own seeded random generator."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def _hit(self, rate: float) -> bool:
        # Always consume one draw so that changing one rate does not shift the others.
        return self.rng.random() < rate

    def copies(self, faults: Faults) -> int:
        """How many times to send one response or event (1 = no duplicate)."""
        count = 1
        while count <= faults.max_duplicates and self._hit(faults.duplicate_rate):
            count += 1
        return count

    def drop(self, faults: Faults) -> bool:
        return self._hit(faults.drop_rate)

    def lose_response(self, faults: Faults) -> bool:
        return self._hit(faults.lose_response_rate)

    def jam(self, faults: Faults) -> bool:
        return self._hit(faults.jam_rate)

    def crash(self, faults: Faults) -> CrashPoint | None:
        """A crash point for this command, or None."""
        if self._hit(faults.crash_rate):
            return self.rng.choice(CRASH_POINTS)
        return None

    def latency(self, faults: Faults) -> float:
        if faults.latency_seconds == 0 and faults.latency_jitter_seconds == 0:
            return 0.0
        jitter = faults.latency_jitter_seconds
        return max(0.0, faults.latency_seconds + self.rng.uniform(-jitter, jitter))

    def next_connection_drop(self, faults: Faults) -> float | None:
        """Seconds until the next injected network loss, or None."""
        mean = faults.connection_drop_mean_seconds
        if mean is None:
            return None
        return self.rng.expovariate(1.0 / mean)
