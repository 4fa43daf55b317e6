"""Core statements run through the driver with plain tuples, for the batched write paths.

`Session.execute(statement, [dict, ...])` builds each row's parameters through the compiled
statement: a dict per row and every value through its type's bind processor. For a batch
of a few hundred cheap UPDATEs and INSERTs that was most of the writer's time per response
(issue 19). A `DriverStatement` is the same Core statement compiled once per dialect with
positional parameters; callers hand it tuples whose values are already what the driver
takes (`Stamps` turns datetimes into what `UTCDateTime` would bind), and the rows go to the
DBAPI's executemany through `Connection.exec_driver_sql`, which keeps SQLAlchemy's events
and error wrapping (an `IntegrityError` is still one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import UpdateBase
from sqlmodel import Session

from backend.store.types import UTCDateTime

Row = tuple[Any, ...]
_POSITIONAL = {"sqlite": "qmark"}
"""The positional paramstyle per dialect; the others (psycopg) take `format` (%s)."""


class DriverStatement:
    """A Core statement whose rows are tuples of its bound parameters, in `names` order."""

    def __init__(self, statement: UpdateBase, names: Sequence[str]) -> None:
        self.statement = statement
        self.names = tuple(names)
        self._compiled: dict[str, tuple[str, Callable[[Row], Row] | None]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, Callable[[Row], Row] | None]:
        """The SQL text for `dialect` and how to reorder a row into its parameter order
        (None: the rows are in that order already)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            dialect_class: Any = type(dialect)  # constructed with a paramstyle of its own
            positional = dialect_class(paramstyle=_POSITIONAL.get(dialect.name, "format"))
            compiled = self.statement.compile(dialect=positional)
            order = tuple(compiled.positiontup or ())
            if set(order) != set(self.names):
                raise ValueError(f"the statement binds {order}, not {self.names}")
            reorder: Callable[[Row], Row] | None = None
            if order != self.names:
                getter = itemgetter(*(self.names.index(name) for name in order))
                reorder = (lambda row: (getter(row),)) if len(order) == 1 else getter
            found = self._compiled[dialect.name] = (compiled.string, reorder)
        return found

    def executemany(self, session: Session, rows: Sequence[Row]) -> None:
        """Run the statement once per row (one executemany; nothing for no rows)."""
        if not rows:
            return
        connection = session.connection()
        sql, reorder = self.compiled(connection.dialect)
        params = list(rows) if reorder is None else [reorder(row) for row in rows]
        connection.exec_driver_sql(sql, params)


class Stamps:
    """Datetimes as `UTCDateTime` binds them on one dialect (naive UTC text on SQLite, the
    aware datetime on PostgreSQL). A batch binds the same few instants many times over (the
    transaction's `now`), so the last one is kept (a pair, replaced whole: any thread may
    share it)."""

    def __init__(self, dialect: Dialect) -> None:
        bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        self._process: Callable[[datetime], Any] = bind or (lambda value: value)
        self._last: tuple[datetime, Any] | None = None

    def __call__(self, value: datetime | None) -> Any:
        if value is None:
            return None
        last = self._last
        if last is not None and last[0] == value:
            return last[1]
        bound = self._process(value)
        self._last = (value, bound)
        return bound


_STAMPS: dict[str, Stamps] = {}


def stamps(session: Session) -> Stamps:
    """The `Stamps` of the session's dialect."""
    dialect = session.get_bind().dialect
    found = _STAMPS.get(dialect.name)
    if found is None:
        found = _STAMPS[dialect.name] = Stamps(dialect)
    return found
