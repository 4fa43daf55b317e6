"""A device's clock offset, estimated from its heartbeats (pure).

Each heartbeat carries the device's `timestamp`; we note when it arrived. `sample =
device timestamp - receive time = offset - transit delay`, and the delay is never
negative, so the largest recent samples are the best estimates. The estimate jumps up to
a larger sample at once and drifts down slowly towards smaller ones (a clock set back).
Seed devices refuse commands by their own clock (`expires_at`): a bank off by more than
`SKEW_LIMIT` seconds is flagged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

SKEW_LIMIT: Final = 5.0
DECAY: Final = 0.1


def offset_sample(device_timestamp: datetime, received_at: datetime) -> float:
    return (device_timestamp - received_at).total_seconds()


def next_offset(previous: float | None, sample: float) -> float:
    if previous is None or sample >= previous:
        return round(sample, 3)
    return round(previous + DECAY * (sample - previous), 3)


def skewed(offset: float | None) -> bool:
    """True when the device's clock is off by more than SKEW_LIMIT seconds."""
    return offset is not None and abs(offset) > SKEW_LIMIT
