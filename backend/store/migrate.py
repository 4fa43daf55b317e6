"""Schema migrations through Alembic (`locker-console db upgrade`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@dataclass(frozen=True)
class UpgradeReport:
    """What one `upgrade` did: the revision before (None: no schema) and after, and the
    migrations applied in order."""

    before: str | None
    after: str | None
    applied: tuple[str, ...]

    def describe(self, database: str) -> str:
        """One line for the operator (`locker-console db upgrade`)."""
        if not self.applied:
            return f"database schema of {database} already at revision {self.after}: nothing to do"
        steps = ", ".join(self.applied)
        if self.before is None:
            return (
                f"database schema of {database} created at revision {self.after} "
                f"({len(self.applied)} migration(s) applied: {steps})"
            )
        return (
            f"database schema of {database} upgraded from revision {self.before} to "
            f"{self.after} ({len(self.applied)} migration(s) applied: {steps})"
        )


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> UpgradeReport:
    """Bring the schema to `revision` (idempotent); says what it did."""
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        before = _current(connection)
        command.upgrade(cfg, revision)
        after = _current(connection)
    script = ScriptDirectory.from_config(cfg)
    applied = (
        [s.revision for s in script.iterate_revisions(after, before)] if after != before else []
    )
    return UpgradeReport(before, after, tuple(reversed(applied)))
