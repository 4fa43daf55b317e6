"""`async with` for the parts that start and stop: the brokers, the MQTT runtime, the services.

class Part(StartStop):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...

async with Part() as part:  # start() on entry, stop() on exit (also after an error)
    ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class StartStop(ABC):
    """An async context manager over `start()` and `stop()`."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
