"""Group items from many callers into one store call (heartbeats, command responses).

Callers `submit()` and await their own result; one flusher task takes everything
waiting (up to `max_items`) and calls the flush function once. While a flush runs, new
items pile up for the next one, so under load batches grow by themselves and when idle
latency stays near zero. With a `linger`, the flusher also waits that long for more
items, but only while items keep coming (the previous flush ended less than `linger`
ago): the first item after a quiet spell is flushed at once.
If a batch fails, its items are retried one by one so one bad item fails alone, unless
the store itself failed (locked, unreachable): then the whole batch fails at once, since
retrying item by item would wait one lock timeout per item.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from backend.log_throttle import LogThrottle
from backend.mqtt.metrics import Metrics
from backend.store.database import first_line, store_unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

FlushFn = Callable[[list[T]], Awaitable[Sequence[R]]]


class Batcher(Generic[T, R]):
    """Collects items and flushes them together; each caller gets its own item's result."""

    def __init__(
        self,
        name: str,
        flush: FlushFn[T, R],
        *,
        linger: float = 0.0,
        max_items: int = 500,
        metrics: Metrics | None = None,
        whole_batch: Callable[[Exception], bool] = store_unavailable,
    ) -> None:
        self.name = name
        self._flush = flush
        self._whole_batch = whole_batch
        self._log = LogThrottle(f"{name} batches retried one by one", logger=log)
        self._linger = linger
        self._max_items = max_items
        self._metrics = metrics
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_flush = float("-inf")  # loop time at which the last flush ended

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Flush what is waiting, then stop."""
        task = self._task
        if task is not None:
            self._closing = True
            self._ready.set()
            await asyncio.gather(task, return_exceptions=True)
            self._task = None
        while self._items:
            await self._flush_some()

    def abort(self) -> None:
        """Stop without flushing (waiting callers are cancelled)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for _item, fut in self._items:
            fut.cancel()
        self._items.clear()

    @property
    def running(self) -> bool:
        """The flusher runs and is not stopping: `add()` may be used."""
        return self._task is not None and not self._closing and not self._task.done()

    @property
    def waiting(self) -> int:
        """Items queued and not yet being flushed."""
        return len(self._items)

    def add(self, item: T) -> asyncio.Future[R]:
        """Queue one item without waiting (only while `running`); its future gets the
        result once flushed. Cheaper than `submit` per item: no task, no gather."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        self._ready.set()
        return future

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue `items` and return their results, in order, once flushed."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._items.extend(zip(items, futures, strict=True))
        self._ready.set()
        if self._task is None or self._closing:
            # Not running: flush inline so callers never hang.
            await self._flush_some()
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            if (
                self._linger > 0
                and not self._closing
                and len(self._items) < self._max_items
                and loop.time() - self._last_flush < self._linger
            ):
                await asyncio.sleep(self._linger)  # under load: let a batch form
            await self._flush_some()
            self._last_flush = loop.time()
            if self._closing and not self._items:
                return

    async def _flush_some(self) -> None:
        batch = self._items[: self._max_items]
        del self._items[: self._max_items]
        if not self._items:
            self._ready.clear()
        if not batch:
            return
        if self._metrics is not None:
            self._metrics.batches[self.name] += 1
            self._metrics.batch_items[self.name] += len(batch)
        try:
            await self._flush_batch(batch)
        except asyncio.CancelledError:
            for _item, fut in batch:
                fut.cancel()
            raise

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or self._whole_batch(exc):
                # The store itself failed (locked, unreachable): every item would fail the
                # same way, one lock timeout each. Fail them together; callers retry.
                for _item, fut in batch:
                    _set_exception(fut, exc)
                return
            if self._log.allow():
                log.warning(
                    "%s batch of %d failed (%s); retrying one by one",
                    self.name,
                    len(batch),
                    first_line(exc),
                )
            for item, fut in batch:
                try:
                    single = await self._flush([item])
                except Exception as one_exc:
                    _set_exception(fut, one_exc)
                else:
                    _set_result(fut, single[0])
            return
        for (_item, fut), result in zip(batch, results, strict=True):
            _set_result(fut, result)


def _set_result(fut: asyncio.Future[R], value: R) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[R], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
