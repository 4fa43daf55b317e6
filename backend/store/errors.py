"""The store's own errors: what the layers above it catch instead of SQLAlchemy's.

`Database.write_session()` and `read_session()` (the store's boundary) turn a
SQLAlchemy error into one of these, the original as its `__cause__`:

* `AppendConflict`: another writer appended to the same bank first (the event store's
  unique keys refused the row); the command may be retried. Also a `ConcurrencyConflict`,
  so whoever reports domain errors reports it (HTTP 409).
* `StoreUnavailable`: the database itself failed (locked, unreachable, out of
  connections, read-only, a file gone): retrying item by item would only wait again.
* `StatementRefused`: the database refused a statement (an out-of-date schema).
* `StoreError`: anything else the database raised (a constraint of a read model, ...).

No SQLAlchemy import here: the CLI checks for these without loading it.
"""

from __future__ import annotations

from backend.domain.errors import ConcurrencyConflict

__all__ = ["AppendConflict", "StatementRefused", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """The database raised; `kind` is the driver's name for it (e.g. `OperationalError`,
    `UndefinedTable`): safe to show, never SQL or parameters."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind or type(self).__name__


class StoreUnavailable(StoreError):
    """The database failed or is away (not one statement's fault)."""


class StatementRefused(StoreError):
    """The database refused a statement: the schema is not what this code expects."""


class AppendConflict(StoreError, ConcurrencyConflict):
    """Another writer appended to the same bank first; the command may be retried."""
