"""Fixtures for the console tests: a real LockerService on SQLite with a frozen clock and
fixed ids/tokens, the device side, a switchable broker, the app and its toasts. The
helpers they are made of live in tests/support/console_app.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from backend.domain.timeutil import FrozenClock
from backend.gateway import InProcessGateway
from backend.service import LockerService
from console.app import LockerConsoleApp
from tests.support.console_app import OPERATOR, Broker, Devices, Toasts, build_service


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def service(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[LockerService]:
    svc = build_service(tmp_path, clock)
    await svc.migrate()
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def devices(service: LockerService, clock: FrozenClock) -> Devices:
    return Devices(service, clock)


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def make_app(
    service: LockerService, clock: FrozenClock, broker: Broker
) -> Iterator[Callable[..., LockerConsoleApp]]:
    def make(*, readonly: bool = False, refresh_interval: float = 0.25) -> LockerConsoleApp:
        gateway = InProcessGateway(
            service,
            actor=OPERATOR,
            broker_connected=lambda: broker.connected,
            broker_detail=lambda: broker.detail,
        )
        return LockerConsoleApp(
            gateway, readonly=readonly, clock=clock, refresh_interval=refresh_interval
        )

    yield make


@pytest.fixture
def toasts() -> Toasts:
    return Toasts()
