"""`Session.get` for rows a batch has already loaded, without the statement machinery.

The batched write paths preload their rows (`batch_reads`), so nearly every `get` that
follows is an identity-map hit. `Session.get` still builds its lookup (argument
normalisation, a FOR UPDATE argument, execution options) each time: about a third of the
response path's CPU in `bench/profiles.py responses` (five gets per response). `get()`
looks in the identity map first and falls back to `Session.get` for anything else
(not loaded, expired, deleted), so the result is the same object either way.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import attributes
from sqlmodel import Session, SQLModel

Row = TypeVar("Row", bound=SQLModel)


def get(session: Session, model: type[Row], key: Any) -> Row | None:
    """The row of `model` with primary key `key` (a value, or a tuple for composite keys)."""
    identity = key if isinstance(key, tuple) else (key,)
    found: Row | None = session.identity_map.get((model, identity, None))
    if found is not None:
        state = attributes.instance_state(found)
        if not state.expired and not state._deleted and state.session_id == session.hash_key:
            return found
    return session.get(model, key)
