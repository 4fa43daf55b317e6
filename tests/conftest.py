"""Shared fixtures: private brokers and databases for the integration tests (fixtures
only: helpers live in tests/support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine

from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from backend.store.migrate import upgrade
from tests.support.databases import DB_KINDS, TEST_DATABASE_URL, private_postgres, truncate_all
from tests.support.mosquitto import MosquittoBroker, mosquitto_available, run_mosquitto
from tests.support.settings import make_settings

# Hypothesis deadlines measure wall time: on a loaded 2-core machine (CI runs brokers,
# databases and subprocesses beside the tests) they fail examples that are merely slow.
# Speed is measured in bench/, never by timed asserts.
hypothesis_settings.register_profile("locker", deadline=None)
hypothesis_settings.load_profile("locker")


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
