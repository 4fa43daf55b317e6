"""Where an action came from, recorded next to who did it (event metadata `origin`).

`current_origin` is a context variable: the standalone console and the CLI set it once
at start from `SSH_CONNECTION` (`ssh from 203.0.113.7`, else `local`); the HTTP API sets
it per request from the peer address it saw and, in attach mode, the origin the console
reports in the `X-Locker-Origin` header (labelled "reported by client": a client can
claim anything, the peer address is what the server saw). `LockerService` copies the
context into its writer thread, so `_meta` reads it there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Final

ORIGIN_HEADER: Final = "X-Locker-Origin"
MAX_ORIGIN: Final = 100

current_origin: ContextVar[str | None] = ContextVar("locker_origin", default=None)


def clean(text: str, limit: int = MAX_ORIGIN) -> str:
    """Printable ASCII only, at most `limit` characters (it is shown in a terminal)."""
    return "".join(ch for ch in text if 0x20 <= ord(ch) < 0x7F)[:limit].strip()


def local_origin(environ: Mapping[str, str] | None = None) -> str:
    """`ssh from ADDRESS` when this process runs in an SSH session, else `local`."""
    env = os.environ if environ is None else environ
    connection = env.get("SSH_CONNECTION", "").split()
    if connection:
        return f"ssh from {clean(connection[0], 64)}"
    return "local"


def http_origin(peer: str | None, reported: str | None) -> str:
    """What the server records for an API request."""
    seen = f"HTTP peer {clean(peer or 'unknown', 64)}"
    said = clean(reported or "")
    return f"{said} (reported by client), {seen}" if said else seen
