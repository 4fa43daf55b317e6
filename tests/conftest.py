"""Shared fixtures: private brokers and databases for the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine

from backend.config import Settings, load_settings
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from backend.store.migrate import upgrade
from tests.support.databases import TEST_DATABASE_URL, private_postgres, truncate_all
from tests.support.mosquitto import MosquittoBroker, mosquitto_available, run_mosquitto

# Hypothesis deadlines measure wall time: on a loaded 2-core machine (CI runs brokers,
# databases and subprocesses beside the tests) they fail examples that are merely slow.
# Speed is measured in bench/, never by timed asserts.
hypothesis_settings.register_profile("locker", deadline=None)
hypothesis_settings.load_profile("locker")

DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto (anonymous, no persistence) on a free port for one test."""
    if not mosquitto_available():
        pytest.skip("mosquitto binary not installed")
    with run_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated private PostgreSQL database for this test run (skips without one)."""
    if not TEST_DATABASE_URL:
        pytest.skip("TEST_DATABASE_URL not set")
    with private_postgres() as url:
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean database: a SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'locker.db'}"
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    return url


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: secrets fixed, data under tmp_path, no .env."""
    values: dict[str, Any] = {
        "locker_data_dir": tmp_path,
        "secret_key": "test-secret-key",
        "mosq_secret": "test-mosq-secret",
        "mqtt_password": "backend-pw",
        "mqtt_provisioning_password": "provisioning-pw",
        "_env_file": None,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[LockerService]:
    """A migrated LockerService on a clean database with a frozen clock."""
    svc = LockerService(make_settings(tmp_path, database_url=db_url), clock=clock)
    await svc.migrate()
    try:
        yield svc
    finally:
        svc.close()
