"""``cancel_and_wait``: a task whose first cancel a library swallowed is still stopped."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from backend.task_stop import cancel_and_wait


async def test_a_swallowed_cancel_is_repeated_until_the_task_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()
    swallowed = 0

    async def session() -> None:  # as a connection session after aiomqtt lost the cancel
        nonlocal swallowed
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        swallowed += 1
        await asyncio.sleep(3600)  # goes on receiving

    task = asyncio.create_task(session(), name="mqtt-session")
    await started.wait()
    async with asyncio.timeout(30):
        await cancel_and_wait([task], repeat_after=0.01)
    assert swallowed == 1 and task.cancelled()
    assert any("mqtt-session" in r.getMessage() for r in caplog.records)


async def test_tasks_that_end_on_the_first_cancel_are_cancelled_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    waiting = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait([done, waiting], repeat_after=3600)
    assert waiting.cancelled() and not done.cancelled()
    assert not caplog.records
