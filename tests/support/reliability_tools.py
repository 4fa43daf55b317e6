"""Helpers for tests/reliability: sizes (CI size by default, `RELIABILITY_SCALE=full` for
the issue's full figures; each figure can be overridden with its own variable), the
operator's service, SQL over a shared store."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, text

from backend.domain.command_status import TERMINAL_STATUSES
from backend.service import LockerService
from tests.support.mosquitto import MosquittoBroker
from tests.support.settings import make_settings

T = TypeVar("T")

OUTCOMES = ("CompartmentOpened", "CommandFailed", "CommandTimedOut", "CommandExpired")
TERMINAL = TERMINAL_STATUSES


FULL = os.environ.get("RELIABILITY_SCALE", "ci").lower() == "full"


def size(name: str, ci: int, full: int) -> int:
    """`RELIABILITY_<NAME>` if set, else the CI or full figure."""
    value = os.environ.get(f"RELIABILITY_{name.upper()}")
    if value:
        return int(value)
    return full if FULL else ci


def operator_service(
    tmp_path: Path, db_url: str, mosquitto: MosquittoBroker, **overrides: Any
) -> LockerService:
    """The operator's side of a test: its own LockerService on the backend process's store
    and broker (requests opens, reads outcomes), in `tmp_path / "operator"`."""
    return LockerService(
        make_settings(
            tmp_path / "operator",
            database_url=db_url,
            mqtt_host=mosquitto.host,
            mqtt_port=mosquitto.port,
            **overrides,
        )
    )


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
