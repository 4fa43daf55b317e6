"""Sizes for the reliability suite: CI size by default, `RELIABILITY_SCALE=full` for the
issue's full figures. Individual figures can be overridden with their own variables."""

from __future__ import annotations

import os

FULL = os.environ.get("RELIABILITY_SCALE", "ci").lower() == "full"


def size(name: str, ci: int, full: int) -> int:
    """`RELIABILITY_<NAME>` if set, else the CI or full figure."""
    value = os.environ.get(f"RELIABILITY_{name.upper()}")
    if value:
        return int(value)
    return full if FULL else ci
