"""Stopping tasks for sure: cancel, and cancel again until they have ended.

A library can swallow a cancellation. Python 3.11's `asyncio.wait_for` returns the result
instead of raising when the cancel meets the awaited result (python/cpython#86296), and
aiomqtt awaits every connect, subscribe, publish and disconnect through it. A task whose
cancel was lost that way goes on running (a connection session keeps receiving and
probing), and whoever awaits it after `cancel()` waits for ever: a CI teardown of the MQTT
runtime on PostgreSQL hung 120 s with the loop idle. Cancelling again reaches the task at
its next await, which is our own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

REPEAT_AFTER_S = 2.0
"""How long a cancelled task may take to end before it is cancelled again."""


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], repeat_after: float = REPEAT_AFTER_S
) -> None:
    """Cancel ``tasks`` and return once every one has ended (their errors are dropped)."""
    every = list(tasks)
    pending = {task for task in every if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=repeat_after)
        if pending:
            names = ", ".join(sorted(str(getattr(t, "get_name", lambda: "?")()) for t in pending))
            log.warning("still running after cancel, cancelling again: %s", names)
    await asyncio.gather(*every, return_exceptions=True)
