"""Databases for tests: a SQLite file per test, and a private PostgreSQL database per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.store.database import normalize_url

# the two stores every store test runs against (PostgreSQL only with TEST_DATABASE_URL)
DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()

TABLES = (
    "stored_events",
    "locker_banks",
    "compartments",
    "command_transactions",
    "bank_liveness",
    "outbox",
    "processed_messages",
    "rejected_messages",
    "api_tokens",
    "alerts",
)


@contextmanager
def private_postgres(base_url: str = "", prefix: str = "locker_test") -> Iterator[str]:
    """Create a fresh database next to `base_url`'s (TEST_DATABASE_URL's by default) for this
    process; drop it after. The benchmarks use it too (`prefix` "locker_bench").

    Each process gets its own database, so parallel runs never see each other's rows.
    """
    base = make_url(normalize_url(base_url or TEST_DATABASE_URL))
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def truncate_all(url: str) -> None:
    """Empty every table of a migrated PostgreSQL database (identities restart)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
