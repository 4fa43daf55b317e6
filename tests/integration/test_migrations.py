"""The Alembic migrations produce exactly the schema the models describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import backend.store.tables  # noqa: F401  (registers the tables)
from backend.store.migrate import alembic_config, upgrade
from tests.support.service_process import clean_env


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_db_upgrade_says_what_it_did(tmp_path: Path) -> None:
    """`locker-console db upgrade` on an empty database says it created the schema, and
    on an up-to-date one that it did nothing (it used to say "up to date" both times)."""
    env = clean_env(LOCKER_DATA_DIR=str(tmp_path))
    first = _cli(env, "db", "upgrade")
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1
    assert "created at revision " + heads[0] in first
    assert "migration(s) applied: 0001" in first
    second = _cli(env, "db", "upgrade")
    assert f"already at revision {heads[0]}: nothing to do" in second
    # An older schema is upgraded and the report names the step(s) taken.
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0001")
        report = upgrade(engine)
    finally:
        engine.dispose()
    assert (report.before, report.after) == ("0001", heads[0])
    assert report.applied and report.applied[0] == "0002"
    assert "upgraded from revision 0001" in report.describe("x")


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "console.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout
