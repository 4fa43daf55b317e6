"""Engines, sessions and the thread that keeps database I/O off the event loop.

SQLite (default) runs in WAL mode with a busy timeout; writes take the lock up
front (BEGIN IMMEDIATE) so two processes never deadlock on a lock upgrade.
PostgreSQL goes through psycopg 3. All blocking work runs in executor threads:
one writer thread (appends are serialized anyway) and a small pool for reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from backend.store.errors import AppendConflict, StatementRefused, StoreError, StoreUnavailable

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 15_000
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 8192
"""Checkpoint the WAL into the database once it holds this many pages (32 MiB at 4 KiB;
SQLite's default is 1,000). A batch of a few hundred responses dirties more than 1,000
pages (tracker, compartment and bank rows, the event indexes), so at the default every
commit paid a checkpoint with its fsyncs; with this, pages rewritten by consecutive batches
reach the database file once per checkpoint (issue 19: writer CPU per response -17 %,
wall -35 %)."""
WRITABLE_TIMEOUT = 2.0
"""Seconds the health check waits for SQLite's write lock before calling the store stuck."""


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """One store: a write engine, a read engine and the executors that run their calls."""

    def __init__(self, url: str, *, read_threads: int = 2) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(self.url, immediate=True)
            self.read_engine = _sqlite_engine(self.url, immediate=False)
        else:
            self.write_engine = create_engine(self.url, pool_pre_ping=True, pool_size=5)
            self.read_engine = self.write_engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="db-read")

    @property
    def display_url(self) -> str:
        """The database URL with its password hidden (for messages)."""
        return self.write_engine.url.render_as_string()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session in one write transaction: committed on success, rolled back on error.
        A database error leaves it as a `StoreError` (`backend.store.errors`)."""
        with (
            store_errors(),
            Session(self.write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextlib.contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session in one read transaction; database errors leave it as `StoreError`."""
        with (
            store_errors(),
            Session(self.read_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking write function on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking read function on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def write_problem(self, timeout: float = WRITABLE_TIMEOUT) -> str | None:
        """None when a write transaction can be taken now, else why not (one line).

        A statement that writes nothing, in a transaction rolled back: SQLite takes its
        write lock (BEGIN IMMEDIATE, waiting at most `timeout`) and refuses a read-only
        file; PostgreSQL refuses a read-only transaction or standby. Nothing is stored."""
        try:
            if self.dialect == "sqlite":
                database = make_url(self.url).database or ":memory:"
                with contextlib.closing(sqlite3.connect(database, timeout=timeout)) as conn:
                    conn.isolation_level = None
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        conn.execute("DELETE FROM api_tokens WHERE 0")
                    finally:
                        conn.execute("ROLLBACK")
            else:
                with self.write_engine.connect() as pg, pg.begin() as txn:
                    pg.execute(text("DELETE FROM api_tokens WHERE false"))
                    txn.rollback()
        except Exception as exc:
            return first_line(exc)
        return None

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def store_unavailable(exc: BaseException) -> bool:
    """True when the database itself failed (locked, unreachable, out of connections), as
    opposed to one statement being refused: retrying item by item would only wait again."""
    return isinstance(exc, StoreUnavailable | OperationalError | InterfaceError | PoolTimeout)


def is_append_clash(exc: IntegrityError) -> bool:
    """True when a flush failed on the event store's keys (position or aggregate version):
    another writer appended first. Any flush (an autoflush too) may surface it. The
    drivers name the table in the error (SQLite: `UNIQUE constraint failed:
    stored_events...`; PostgreSQL: the `stored_events_...` key), nowhere else."""
    return "stored_events" in str(exc.orig)


def as_store_error(exc: SQLAlchemyError) -> StoreError:
    """The store's error for a SQLAlchemy one (see `backend.store.errors`)."""
    orig = getattr(exc, "orig", None)
    kind = type(orig).__name__ if orig is not None else type(exc).__name__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    if isinstance(exc, IntegrityError) and is_append_clash(exc):
        return AppendConflict("events were appended to concurrently", kind)
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return StoreUnavailable(message, kind)
    if isinstance(exc, ProgrammingError):
        return StatementRefused(message, kind)
    return StoreError(message, kind)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Raise SQLAlchemy's errors as the store's (the original is the `__cause__`)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise as_store_error(exc) from exc


def first_line(exc: BaseException) -> str:
    """An error for a log line: its kind and the first line of its text (no SQL, no
    parameters, which SQLAlchemy appends on further lines)."""
    text_ = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text_[0][:200]}" if text_ else exc.__class__.__name__
