"""Per-bank ordered lanes between the receive loop and the handlers.

The receive loop only classifies a message and `put()`s it on its bank's lane; a
worker task per busy lane hands the lane's waiting messages, in arrival order, to
the handler. Messages of one bank are applied in order while different banks
proceed concurrently, so one slow bank (or a slow store call) never stalls the
receive loop. `max_pending` bounds the messages in flight: beyond it `put()` waits,
which pushes back on the client's own queue instead of growing without limit.
`on_handled` gets each group once the handler is done with it (returned or failed), never
for a group whose worker was cancelled: that is when its messages are acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

LaneHandler = Callable[[str, list[T]], Awaitable[None]]


def _nothing(_items: list[T]) -> None:
    return None


class Dispatcher(Generic[T]):
    """FIFO lanes by key; one worker per non-empty lane; bounded in-flight count."""

    def __init__(
        self,
        handle: LaneHandler[T],
        *,
        max_pending: int = 10_000,
        max_group: int = 500,
        on_handled: Callable[[list[T]], None] = _nothing,
    ) -> None:
        self._handle = handle
        self._on_handled = on_handled
        self._max_pending = max_pending
        self._max_group = max_group
        self._lanes: dict[str, deque[T]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._outstanding = 0
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Messages received but not yet handled."""
        return self._outstanding

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def busy(self, key: str) -> bool:
        """Messages of lane `key` are waiting or being handled."""
        return key in self._lanes

    def put_nowait(self, key: str, item: T) -> None:
        """Queue `item` on lane `key` now, past the `max_pending` bound (for an item that
        was already counted once: a heartbeat whose batch failed goes back to its lane)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
        lane.append(item)
        self._outstanding += 1
        self._idle.clear()
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key, lane), name=f"lane-{key}")

    async def put(self, key: str, item: T) -> None:
        """Queue `item` on lane `key` (waits while too many messages are in flight)."""
        while self._outstanding >= self._max_pending:
            self._space.clear()
            await self._space.wait()
        self.put_nowait(key, item)

    async def _work(self, key: str, lane: deque[T]) -> None:
        try:
            while lane:
                count = min(len(lane), self._max_group)
                group = [lane.popleft() for _ in range(count)]
                try:
                    try:
                        await self._handle(key, group)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("handler for lane %s failed", key[:40])
                    self._on_handled(group)
                finally:
                    self._finished(count)
        finally:
            # No await between the last emptiness check and here: put() cannot interleave.
            self._workers.pop(key, None)
            if not lane:
                self._lanes.pop(key, None)

    def _finished(self, count: int) -> None:
        self._outstanding -= count
        if self._outstanding < self._max_pending:
            self._space.set()
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued message has been handled."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    async def abort(self) -> None:
        """Drop everything queued and cancel the workers (a crash, as far as we are concerned)."""
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._lanes.clear()
        self._workers.clear()
        self._outstanding = 0
        self._space.set()
        self._idle.set()
