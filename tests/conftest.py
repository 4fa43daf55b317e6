"""Shared fixtures: private brokers and databases for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import MosquittoBroker, mosquitto_available, run_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto (anonymous, no persistence) on a free port for one test."""
    if not mosquitto_available():
        pytest.skip("mosquitto binary not installed")
    with run_mosquitto(tmp_path) as broker:
        yield broker
