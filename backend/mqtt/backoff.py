"""Capped exponential backoff with jitter, for reconnects and retries."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """`next()` gives initial, 2x, 4x ... up to `maximum` seconds, each with +-`jitter`;
    `reset()` after a success."""

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2
    attempts: int = field(default=0, init=False)

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(self.attempts, 32))
        self.attempts += 1
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))

    def reset(self) -> None:
        self.attempts = 0
