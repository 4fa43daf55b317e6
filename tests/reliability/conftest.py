"""Sizes for the reliability suite: CI size by default, `RELIABILITY_SCALE=full` for the
issue's full figures. Individual figures can be overridden with their own variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from backend.service import LockerService
from tests.conftest import make_settings
from tests.support.mosquitto import MosquittoBroker

FULL = os.environ.get("RELIABILITY_SCALE", "ci").lower() == "full"


def size(name: str, ci: int, full: int) -> int:
    """`RELIABILITY_<NAME>` if set, else the CI or full figure."""
    value = os.environ.get(f"RELIABILITY_{name.upper()}")
    if value:
        return int(value)
    return full if FULL else ci


def operator_service(
    tmp_path: Path, db_url: str, mosquitto: MosquittoBroker, **overrides: Any
) -> LockerService:
    """The operator's side of a test: its own LockerService on the backend process's store
    and broker (requests opens, reads outcomes), in `tmp_path / "operator"`."""
    return LockerService(
        make_settings(
            tmp_path / "operator",
            database_url=db_url,
            mqtt_host=mosquitto.host,
            mqtt_port=mosquitto.port,
            **overrides,
        )
    )
