"""``wait_event``: a deadline on an ``asyncio.Event`` that never swallows a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from backend.event_wait import wait_event


async def test_set_event_is_true_and_the_deadline_false() -> None:
    event = asyncio.Event()
    event.set()
    assert await wait_event(event, 10) is True
    assert await wait_event(asyncio.Event(), 0.01) is False


async def _cancel_as_the_event_is_set(wait: Callable[[asyncio.Event], Awaitable[object]]) -> int:
    """A follower loop, cancelled in the same loop iteration as its wake event is set;
    returns how many waits it did after the cancel (0: the cancel was not lost)."""
    event = asyncio.Event()
    waiting = asyncio.Event()
    after_cancel = 0
    cancelled = False

    async def follower() -> None:
        nonlocal after_cancel
        while True:
            event.clear()
            waiting.set()
            await wait(event)
            if cancelled:
                after_cancel += 1
                if after_cancel > 3:
                    return

    task = asyncio.create_task(follower())
    await waiting.wait()
    event.set()
    task.cancel()
    cancelled = True
    with contextlib.suppress(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    return after_cancel


async def test_a_cancel_that_meets_the_wake_is_not_lost() -> None:
    assert await _cancel_as_the_event_is_set(lambda e: wait_event(e, 0.01)) == 0


async def test_the_race_is_real_with_wait_for_on_this_python() -> None:
    """The test above would catch the bug: on 3.11 ``asyncio.wait_for`` loses this cancel."""
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("fixed in 3.12 (python/cpython#86296)")

    async def old(event: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), 0.01)

    assert await _cancel_as_the_event_is_set(old) > 0


def test_backend_waits_with_no_asyncio_wait_for() -> None:
    """The loops that get cancelled use ``wait_event``; a new ``asyncio.wait_for`` in the
    backend would bring the 3.11 race back."""
    from pathlib import Path

    import backend

    root = Path(backend.__file__).parent
    offenders = [
        f"{p.relative_to(root)}:{n}"
        for p in sorted(root.rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line and not line.lstrip().startswith("#")
    ]
    assert offenders == []
