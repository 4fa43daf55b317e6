"""Schema migrations through Alembic (`locker-console db upgrade`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def pending_revisions(engine: Engine) -> int:
    """How many migrations `upgrade` would apply to reach the head."""
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    script = ScriptDirectory.from_config(cfg)
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return sum(1 for _ in script.iterate_revisions("heads", current or "base"))


def upgrade(
    engine: Engine, revision: str = "head", on_step: Callable[[str], None] | None = None
) -> None:
    """Bring the schema to `revision` (idempotent); `on_step(revision)` after each one."""
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        if on_step is not None:

            def applied(*, step: Any, **_: Any) -> None:
                on_step(str(step.up_revision_id))

            cfg.attributes["on_version_apply"] = applied
        command.upgrade(cfg, revision)
