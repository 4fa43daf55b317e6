"""The console's parts on their own: alerts, refresh schedule, keyed table, watcher,
formatting; and two flows that need no screenshots (timeouts, hostile names)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult

from backend.domain.timeutil import FrozenClock
from backend.gateway import SystemStatus
from backend.service import LockerService
from backend.views import BankView, CompartmentView, EventView
from console.alerts import BankName, event_alerts, status_alerts
from console.app import LockerConsoleApp
from console.context import EVENT_TAIL, ConsoleContext
from console.screens.schedule import RefreshSchedule
from console.watcher import BackendWatcher
from tests.support.console_app import Devices, Toasts, cell, ready
from tests.support.waiting import app_until
from widgets.bank_table import BankTable
from widgets.formatting import age, duration, truncate
from widgets.keyed_table import KeyedTable, Row, filter_rows
from widgets.sparkline import spark

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def event(position: int, event_type: str, bank: str = "b1", **payload: Any) -> EventView:
    return EventView(
        position=position,
        event_type=event_type,
        aggregate_uuid=bank,
        aggregate_version=position,
        payload={"occurred_at": "2026-01-01T12:00:00Z", **payload},
        metadata={"actor": "device"},
        created_at=T0,
    )


# ----- alerts ----------------------------------------------------------------------------


def test_offline_alerts_name_the_bank_and_a_burst_is_summarised() -> None:
    names = {f"b{i}": BankName(f"Bank {i}", "Berlin") for i in range(10)}
    one = event_alerts(
        [event(1, "LockerBankWentOffline", "b1", reason="last_will")], names, {}, set()
    )
    assert [(a.severity, a.message) for a in one] == [
        ("warning", "Bank 1 (Berlin) went offline (last will).")
    ]
    burst = [
        event(i, "LockerBankWentOffline", f"b{i}", reason="heartbeat_timeout") for i in range(8)
    ]
    assert [a.message for a in event_alerts(burst, names, {}, set())] == ["8 banks went offline."]


def test_status_alerts_only_on_changes() -> None:
    up = SystemStatus(broker_connected=True, database_ok=True)
    down = SystemStatus(broker_connected=False, database_ok=True, broker_detail="refused")
    assert status_alerts(None, down) == []
    assert status_alerts(up, up) == []
    (dropped,) = status_alerts(up, down)
    assert dropped.severity == "error" and "refused" in dropped.message
    (back,) = status_alerts(down, up)
    assert back.severity == "information"
    assert status_alerts(down, up, was_up=False) == []  # connecting at start is no news


# ----- refresh schedule ------------------------------------------------------------------


def test_schedule_fetches_on_change_periodically_and_within_its_duty() -> None:
    now = [0.0]
    schedule = RefreshSchedule(period=1.0, duty=0.25, monotonic=lambda: now[0])
    assert schedule.due(0)
    schedule.started(0)
    now[0] = 0.1
    schedule.finished()  # the fetch took 0.1 s: no new fetch before 0.4 s
    now[0] = 0.3
    assert not schedule.due(5, force=True)
    now[0] = 0.45
    assert schedule.due(5)  # the event log moved
    assert not schedule.due(0)  # nothing happened, not a second yet
    assert schedule.due(0, force=True)
    now[0] = 1.01
    assert schedule.due(0)  # a second without news: look anyway (heartbeats)


# ----- keyed table -----------------------------------------------------------------------


class Letters(KeyedTable):
    COLUMNS = (("name", "name", 8), ("state", "state", None))
    FLEX_MAX = 12


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Letters()


def rows(*items: tuple[str, str]) -> list[Row]:
    return [Row(key, (Text(key.upper()), Text(state))) for key, state in items]


async def test_keyed_table_updates_in_place_and_keeps_the_cursor() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(Letters)
        table.sync(rows(("a", "on"), ("b", "on"), ("c", "on")))
        await pilot.pause()
        table.move_to_key("b")
        table.sync(rows(("a", "on"), ("b", "off"), ("c", "on")))
        assert table.keys == ["a", "b", "c"] and table.cursor_key == "b"
        assert table.get_cell("b", "state").plain == "off"
        table.sync(rows(("a", "on"), ("c", "on"), ("b", "off"), ("d", "new")))  # reordered
        assert table.keys == ["a", "c", "b", "d"] and table.cursor_key == "b"
        table.sync(rows(("b", "off"), ("d", "new")))  # rows gone: patched, not rebuilt
        assert table.keys == ["b", "d"] and table.cursor_key == "b"
        table.sync(rows(("b", "a very long state that will not fit"), ("d", "new")))
        await pilot.pause()
        assert table.get_cell("b", "state").plain.endswith("…")
        assert filter_rows(rows(("a", "on"), ("b", "off")), "OFF") == rows(("b", "off"))


# ----- watcher ---------------------------------------------------------------------------


class Log:
    """A gateway over a fixed event log with gaps in its positions."""

    actor = "alice"

    def __init__(self, positions: list[int]) -> None:
        self.events = [
            event(p, "DoorStateChanged", compartment_number=1, state="open") for p in positions
        ]
        self.reads = 0

    async def events_after(self, position: int = 0, limit: int = 500) -> list[EventView]:
        self.reads += 1
        return [e for e in self.events if e.position > position][:limit]

    async def status(self) -> SystemStatus:
        return SystemStatus(broker_connected=True, database_ok=True)


async def test_watcher_reads_only_the_tail_of_a_long_log() -> None:
    log = Log([*range(1, 9000, 3), 9001])
    ctx = ConsoleContext(gateway=log, clock=FrozenClock())  # type: ignore[arg-type]  # a stand-in gateway
    watcher = BackendWatcher(ctx)
    assert await watcher.end_position() == 9001
    log.reads = 0
    assert await watcher.poll() == []  # history is shown, never toasted
    assert watcher.ready and ctx.position == 9001
    assert ctx.events[-1].position == 9001 and len(ctx.events) <= EVENT_TAIL
    assert ctx.events[0].position > 9001 - EVENT_TAIL
    assert log.reads < 40
    empty = BackendWatcher(ConsoleContext(gateway=Log([]), clock=FrozenClock()))  # type: ignore[arg-type]  # a stand-in gateway
    assert await empty.end_position() == 0


# ----- formatting ------------------------------------------------------------------------


def test_formatting() -> None:
    assert age(None, T0) == "never"
    assert age(T0 - timedelta(seconds=3), T0) == "3s ago"
    assert age(T0 - timedelta(minutes=5), T0) == "5m ago"
    assert age(T0 - timedelta(hours=3), T0) == "3h ago"
    assert duration(0.4) == "0.40s" and duration(None) == "—" and duration(125) == "2m 05s"
    assert truncate("Main hall\x1b[31m", 20) == "Main hall?[31m"
    assert truncate("abcdef", 4) == "abc…"
    assert spark([30, 30, 90], 90, width=3) == "▃▃█"


# ----- flows without screenshots ---------------------------------------------------------

MakeApp = Callable[..., LockerConsoleApp]


async def test_an_unanswered_open_expires_is_toasted_and_shown(
    make_app: MakeApp,
    devices: Devices,
    service: LockerService,
    clock: FrozenClock,
    toasts: Toasts,
) -> None:
    """An open expires when it times out (one terminal event, DESIGN 9)."""
    uuid = await devices.bank("Main hall", "Berlin")
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        txn = await service.request_open(uuid, 4, actor="bob")
        await devices.relay()
        clock.advance(service.settings.command_timeout + 1)
        assert (await service.devices.sweep())["expired"] >= 1
        await pilot.press("2")
        table = app.screen.query_one("#transactions", KeyedTable)
        await app_until(
            pilot, lambda: cell(table, txn.transaction_id, "status") == "expired", "expired"
        )
        await app_until(pilot, lambda: toasts.matching("Command expired"), "the toast")
        messages = [n.message for n in toasts.matching("Command expired")]
        assert "Opening compartment 4 on Main hall (Berlin) expired; it will not be executed." in (
            messages
        )


async def test_hostile_names_are_shown_literally(make_app: MakeApp, devices: Devices) -> None:
    uuid = await devices.bank("[/bold] [red]x[/red] [2J", "[link=evil]", online=False)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: uuid in table.keys, "the bank")
        name = cell(table, uuid, "name")
        assert name.startswith("[/bold] [re") and name.endswith("…")  # literal, cut to fit
        assert cell(table, uuid, "location").startswith("[link")


async def test_control_characters_in_a_stored_name_never_reach_the_terminal() -> None:
    """The service refuses them now, but a store written before may still hold them."""
    hostile = bank_view(1, T0).model_copy(update={"name": "a\x1b[2J\x07b", "location": "\x00x"})
    app = FleetApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(BankTable)
        table.show([hostile], T0, {})
        await pilot.pause()
        for column in ("name", "location"):
            shown = cell(table, hostile.uuid, column)
            assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in shown), repr(shown)
        assert cell(table, hostile.uuid, "name").startswith("a")


def bank_view(i: int, heard: datetime) -> BankView:
    return BankView(
        uuid=f"00000000-0000-4000-8000-{i:012d}",
        name=f"Bank {i:03d}",
        location="Berlin",
        status="online",
        heartbeat_interval_seconds=30,
        last_heartbeat_at=heard,
        config_state="in_sync",
        desired_config_hash="0" * 64,
        created_at=T0,
        updated_at=T0,
    )


class FleetApp(App[None]):
    def compose(self) -> ComposeResult:
        yield BankTable()


async def test_fleet_ages_move_near_the_viewport_and_catch_up_when_scrolled() -> None:
    banks = [bank_view(i, T0) for i in range(300)]
    first, last = banks[0].uuid, banks[-1].uuid
    app = FleetApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(BankTable)
        table.show(banks, T0 + timedelta(seconds=3), {})
        await pilot.pause()
        assert cell(table, first, "heartbeat").startswith("3s ago")
        assert cell(table, last, "heartbeat").startswith("3s ago")
        table.show(banks, T0 + timedelta(seconds=9), {})
        assert cell(table, first, "heartbeat").startswith("9s ago")
        assert cell(table, last, "heartbeat").startswith("3s ago")  # far away: not yet
        table.move_to_key(last)
        await pilot.pause()
        table.show(banks, T0 + timedelta(seconds=10), {})
        assert cell(table, last, "heartbeat").startswith("10s ago")
        moved = [*banks[:-1], bank_view(299, T0 + timedelta(seconds=10))]
        table.move_to_key(first)
        await pilot.pause()
        table.show(moved, T0 + timedelta(seconds=10), {})
        assert cell(table, last, "heartbeat").startswith("10s ago")  # far away: not yet
        table.move_to_key(last)
        await pilot.pause()
        table.show(moved, T0 + timedelta(seconds=11), {})
        assert cell(table, last, "heartbeat").startswith("1s ago")  # its new heartbeat
        gone = [*moved[:-1], moved[-1].model_copy(update={"status": "offline"})]
        table.move_to_key(first)
        await pilot.pause()
        table.show(gone, T0 + timedelta(seconds=40), {})
        assert cell(table, last, "status") == "offline"  # far away, but its bank changed
        assert cell(table, last, "heartbeat").startswith("30s ago")


async def test_fleet_rows_are_rebuilt_for_what_they_show_only() -> None:
    """A fresh fetch (new view objects) of banks whose shown fields are the same redraws
    nothing; a changed door or command count changes those cells, near or far."""
    door = CompartmentView(number=1, slave_id=1, address=1, door_state="closed")
    banks = [bank_view(i, T0).model_copy(update={"compartments": [door]}) for i in range(300)]
    first, last = banks[0].uuid, banks[-1].uuid
    now = T0 + timedelta(seconds=3)
    app = FleetApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(BankTable)
        table.show(banks, now, {})
        await pilot.pause()
        shown = {key: table.get_row(key) for key in (first, last)}
        refetched = [
            b.model_copy(update={"updated_at": now, "uptime_seconds": 9.0}, deep=True)
            for b in banks
        ]
        table.show(refetched, now, {})
        for key, cells in shown.items():
            assert all(a is b for a, b in zip(table.get_row(key), cells, strict=True))
        opened = door.model_copy(update={"door_state": "open"})
        changed = [
            b.model_copy(update={"compartments": [opened], "pending_commands": 2})
            if b.uuid in (first, last)
            else b
            for b in refetched
        ]
        table.show(changed, now, {})
        for key in (first, last):
            assert cell(table, key, "doors") == "1/1"
            assert cell(table, key, "pending") == "2"
            assert cell(table, key, "heartbeat").startswith("3s ago")


def test_runtime_condition_store_unwritable_is_toasted_both_ways() -> None:
    ok = SystemStatus(broker_connected=True, database_ok=True)
    bad = SystemStatus(broker_connected=True, database_ok=True, conditions=["store_unwritable"])
    (down,) = status_alerts(ok, bad)
    assert down.severity == "error" and down.title == "Store unwritable"
    (back,) = status_alerts(bad, ok)
    assert back.title == "Store writable"
    assert status_alerts(bad, bad) == []
