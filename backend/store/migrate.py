"""Schema migrations through Alembic (`locker-console db upgrade`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def pending_revisions(engine: Engine) -> int:
    """How many migrations `upgrade` would apply to reach the head."""
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    script = ScriptDirectory.from_config(cfg)
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return sum(1 for _ in script.iterate_revisions("heads", current or "base"))


def upgrade(
    engine: Engine, revision: str = "head", on_step: Callable[[str], None] | None = None
) -> UpgradeReport:
    """Bring the schema to `revision` (idempotent); says what it did. `on_step(revision)`
    after each migration (progress)."""
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        if on_step is not None:

            def applied(*, step: Any, **_: Any) -> None:
                on_step(str(step.up_revision_id))

            cfg.attributes["on_version_apply"] = applied
        before = _current(connection)
        command.upgrade(cfg, revision)
        after = _current(connection)
    script = ScriptDirectory.from_config(cfg)
    revisions = (
        [s.revision for s in script.iterate_revisions(after, before)] if after != before else []
    )
    return UpgradeReport(before, after, tuple(reversed(revisions)))
