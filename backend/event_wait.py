"""Waiting for an ``asyncio.Event`` with a deadline, without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
iteration as the awaited result: it returns the result instead (python/cpython#86296,
fixed in 3.12). A follower loop that waits for its wake event that way and is cancelled
just as a change notification sets the event goes on running, and whoever awaits it
after ``cancel()`` waits for ever (CI: a PostgreSQL teardown hung 120 s twice).
``asyncio.timeout`` counts cancellations and lets an outside one through.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True once ``event`` is set, False after ``timeout`` seconds; a cancel always raises."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
