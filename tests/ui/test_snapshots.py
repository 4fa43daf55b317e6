"""SVG snapshots of every screen at 80x24 and 120x40 (and the dialogs at 80x24).

One small fleet is seeded once for the module with a frozen clock, fixed uuids and
fixed tokens: an online bank with an open door, a jammed door and a duplicate answer;
an offline bank with a pending command; a bank with a drifted config; a bank still
waiting for its device. The snapshots only read it. Regenerate with
`pytest tests/ui/test_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from backend.domain.contract import CommandResponse
from backend.domain.timeutil import FrozenClock
from backend.gateway import InProcessGateway
from backend.service import LockerService
from console.app import LockerConsoleApp
from console.modals.token import TokenModal
from console.screens.bank import BankScreen
from console.screens.base import LiveScreen
from tests.support.console_app import OPERATOR, Devices, build_service
from tests.support.waiting import app_until
from widgets.bank_table import BankTable

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
RunBefore = Callable[[Pilot[None]], Awaitable[None]]


async def seed(service: LockerService, clock: FrozenClock) -> dict[str, str]:
    """The fleet every snapshot shows; returns bank uuids by name."""
    await service.migrate()
    devices = Devices(service, clock)
    banks = {
        "Main hall": await devices.bank("Main hall", "Berlin HQ", 12),
        "Station": await devices.bank("Station", "Hamburg", 8),
        "Mall": await devices.bank("Mall", "Munich", 6),
        "Depot": await devices.bank("Depot", "", 4, online=False),
    }
    main, station, mall = banks["Main hall"], banks["Station"], banks["Mall"]
    for uuid, doors in ((main, 12), (station, 8), (mall, 6)):
        await service.devices.record_door_snapshot(
            uuid, [(n, "closed") for n in range(1, 1 + doors)]
        )
    clock.advance(1)
    await devices.relay()
    clock.advance(0.25)
    await devices.apply_config(main)
    await devices.apply_config(station)
    await devices.apply_config(mall, in_sync=False)

    clock.advance(20)
    opened = await service.request_open(main, 3, actor=OPERATOR)
    await devices.relay()
    clock.advance(0.4)
    await devices.answer(main, opened.transaction_id)
    duplicate = CommandResponse(
        action="open_compartment",
        result="success",
        transaction_id=opened.transaction_id,
        timestamp=clock.now(),
    )
    await service.devices.record_response(main, duplicate, duplicate.to_bytes())
    clock.advance(5)
    jammed = await service.request_open(main, 5, actor="bob")
    await devices.relay()
    clock.advance(0.6)
    await devices.answer(
        main, jammed.transaction_id, result="error", error_code="DOOR_JAMMED", message="jammed"
    )

    clock.advance(3)
    await devices.last_will(station)
    await service.request_open(station, 2, actor=OPERATOR)  # waits for the bank: pending
    clock.advance(20)
    await devices.heartbeat(mall)
    clock.advance(9)
    await devices.heartbeat(main)
    clock.advance(3)
    return banks


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LockerService, FrozenClock]]:
    clock = FrozenClock(datetime.fromisoformat("2026-01-01T02:00:00+00:00"))
    service = build_service(Path(tmp_path_factory.mktemp("snapshots")), clock)
    asyncio.run(seed(service, clock))
    try:
        yield service, clock
    finally:
        service.close()


def console(
    world: tuple[LockerService, FrozenClock], *, readonly: bool = False
) -> LockerConsoleApp:
    service, clock = world
    gateway = InProcessGateway(
        service, actor=OPERATOR, broker_connected=lambda: True, broker_detail=lambda: ""
    )
    return LockerConsoleApp(gateway, readonly=readonly, clock=clock)


async def settle(pilot: Pilot[None]) -> None:
    """Wait until the app has caught up and the current screen has redrawn since."""
    app = pilot.app
    assert isinstance(app, LockerConsoleApp)
    await app_until(pilot, lambda: app.ready, "the watcher to catch up")
    screen = app.screen
    if isinstance(screen, LiveScreen):
        await app_until(pilot, lambda: not screen.loading, "the fetch in flight")
        seen = screen.refreshes

        def fetched_again() -> bool:
            if screen.refreshes > seen:
                return True
            screen.tick(force=True)  # a fetch that starts after the app caught up
            return False

        await app_until(pilot, fetched_again, "a fresh redraw")
    for field in app.screen.query(Input):
        field.cursor_blink = False
    await app.workers.wait_for_complete()
    await pilot.pause()


def on(*keys: str, then: Callable[[Pilot[None]], Awaitable[Any]] | None = None) -> RunBefore:
    """Settle, press `keys` (settling after each screen change), then run `then`."""

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        if then is not None:
            await then(pilot)
            await settle(pilot)

    return run_before


async def to_main_hall(pilot: Pilot[None]) -> None:
    """Open the bank screen of Main hall (second row, banks are sorted by name)."""
    table = pilot.app.screen.query_one(BankTable)
    table.move_cursor(row=1)
    await pilot.press("enter")
    await app_until(pilot, lambda: isinstance(pilot.app.screen, BankScreen), "the bank")
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_fleet(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    """Sorted by attention: offline, then the jammed door, then the drifted config."""
    assert snap_compare(console(world), terminal_size=size, run_before=on())


@pytest.fixture(scope="module")
def empty_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LockerService, FrozenClock]]:
    clock = FrozenClock(datetime.fromisoformat("2026-01-01T02:00:00+00:00"))
    service = build_service(Path(tmp_path_factory.mktemp("empty")), clock)
    asyncio.run(service.migrate())
    try:
        yield service, clock
    finally:
        service.close()


@pytest.mark.parametrize("size", SIZES)
def test_empty_fleet(snap_compare: Any, empty_world: Any, size: tuple[int, int]) -> None:
    assert snap_compare(console(empty_world), terminal_size=size, run_before=on())


@pytest.mark.parametrize("size", SIZES)
def test_bank_event_log(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    """The bank screen with its heartbeat charts and its event log."""
    assert snap_compare(console(world), terminal_size=size, run_before=on(then=to_main_hall_events))


async def to_main_hall_events(pilot: Pilot[None]) -> None:
    await to_main_hall(pilot)
    await pilot.press("l")
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_bank(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    assert snap_compare(console(world), terminal_size=size, run_before=on(then=to_main_hall))


@pytest.mark.parametrize("size", SIZES)
def test_alerts(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    """The alert list: the offline bank, the jammed door (command failed)."""
    assert snap_compare(console(world), terminal_size=size, run_before=on("5"))


@pytest.mark.parametrize("size", SIZES)
def test_transactions(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    assert snap_compare(console(world), terminal_size=size, run_before=on("2"))


@pytest.mark.parametrize("size", SIZES)
def test_events(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    assert snap_compare(console(world), terminal_size=size, run_before=on("3"))


@pytest.mark.parametrize("size", SIZES)
def test_provisioning(snap_compare: Any, world: Any, size: tuple[int, int]) -> None:
    assert snap_compare(console(world), terminal_size=size, run_before=on("4"))


def test_fleet_readonly(snap_compare: Any, world: Any) -> None:
    assert snap_compare(console(world, readonly=True), run_before=on())


def test_confirm_open(snap_compare: Any, world: Any) -> None:
    async def ask(pilot: Pilot[None]) -> None:
        await to_main_hall(pilot)
        await pilot.press("right", "right", "o")

    assert snap_compare(console(world), run_before=on(then=ask))


def test_token_once(snap_compare: Any, world: Any) -> None:
    async def show_token(pilot: Pilot[None]) -> None:
        modal = TokenModal(
            bank_uuid="00000000-0000-4000-8000-000000000099",
            bank_name="Depot",
            token="secret-0042-example-token-shown-once",
            expires_at=datetime.fromisoformat("2026-01-08T02:01:02+00:00"),
            reissued=False,
        )
        await pilot.app.push_screen(modal)

    assert snap_compare(console(world), run_before=on("4", then=show_token))


def test_help(snap_compare: Any, world: Any) -> None:
    assert snap_compare(console(world), run_before=on("question_mark"))
