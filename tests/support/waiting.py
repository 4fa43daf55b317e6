"""Waiting in tests: await a condition with a deadline, never a bare sleep.

`until(probe, done, what, timeout)` asks `probe` (a function, plain or async) again and
again until `done(value)` holds (by default: the value is truthy) and returns that value;
past the deadline it fails naming `what` and the last value. `app_until(pilot, ...)` is
the console tests' form: between checks it lets the Textual app run, and a widget, row or
cell that is not there yet counts as "not yet".
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from textual.pilot import Pilot

T = TypeVar("T")


async def until(
    probe: Callable[[], T | Awaitable[T]],
    done: Callable[[T], object] = bool,
    what: str = "the condition",
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
    not_yet: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `probe` every `interval` seconds until `done(value)`; the value. An exception
    in `not_yet` raised by the probe or `done` means "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = "nothing yet"
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            last = value
            if done(value):
                return value
        except not_yet:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last {last!r})")
        await pause(interval)  # polling a condition with a deadline


async def app_until(
    pilot: Pilot[None], predicate: Callable[[], object], what: str, timeout: float = 10.0
) -> float:
    """Let the console run until `predicate()` holds; returns the seconds it took."""
    from textual.css.query import NoMatches
    from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

    start = time.monotonic()
    await until(
        predicate,
        what=what,
        timeout=timeout,
        pause=pilot.pause,
        not_yet=(LookupError, CellDoesNotExist, RowDoesNotExist, NoMatches),
    )
    return time.monotonic() - start


async def bounded_teardown(step: Awaitable[None], seconds: float, what: str) -> None:
    """Run a teardown step; if it has not ended after ``seconds``, print the stack of every
    task of the loop (pytest-timeout shows only threads, and a hung teardown is an idle
    loop waiting on some task) and fail with what did not stop."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        task.result()
        return
    print(f"--- {what} did not end within {seconds} s; the loop's tasks:")
    for other in asyncio.all_tasks():
        other.print_stack(file=sys.stdout)
    task.cancel()
    raise AssertionError(f"{what} did not end within {seconds} s (task stacks above)")
