"""Helpers for tests/reliability: polling with a deadline, SQL over a shared store."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, text

from backend.domain.command_status import TERMINAL_STATUSES

T = TypeVar("T")

OUTCOMES = ("CompartmentOpened", "CommandFailed", "CommandTimedOut", "CommandExpired")
TERMINAL = TERMINAL_STATUSES


async def until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    what: str,
    timeout: float,
    interval: float = 0.2,
) -> T:
    """Poll `probe` until `done(value)`; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last {value!r})")
        await asyncio.sleep(interval)  # polling a condition with a deadline


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class SqlProbe:
    """Read-only SQL over the store a backend process writes, off the event loop."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        def work() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(text(sql), params))

        return await asyncio.to_thread(work)

    async def scalar(self, sql: str, **params: Any) -> Any:
        return (await self.rows(sql, **params))[0][0]

    async def statuses(self) -> dict[str, str]:
        rows = await self.rows("SELECT transaction_id, status FROM command_transactions")
        return {r.transaction_id: r.status for r in rows}

    async def outcomes(self) -> dict[str, list[str]]:
        """transaction_id -> its outcome events in store order."""
        rows = await self.rows(
            "SELECT event_type, payload FROM stored_events WHERE event_type IN "
            "('CompartmentOpened','CommandFailed','CommandTimedOut','CommandExpired') "
            "ORDER BY id"
        )
        out: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
            out[payload["transaction_id"]].append(row.event_type)
        return out

    def close(self) -> None:
        self.engine.dispose()


def outcome_sequence_ok(events: list[str]) -> bool:
    """Exactly one domain outcome per transaction, precisely:

    - one `CompartmentOpened` or one `CommandFailed`, nothing else; or
    - one `CommandTimedOut` or `CommandExpired`, then at most one late
      `CompartmentOpened`/`CommandFailed` (the door did open after all), nothing else.
    """
    final = {"CompartmentOpened", "CommandFailed"}
    give_up = {"CommandTimedOut", "CommandExpired"}
    if len(events) == 1:
        return events[0] in final | give_up
    if len(events) == 2:
        return events[0] in give_up and events[1] in final
    return False
