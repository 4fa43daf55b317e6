"""Pilot tests of the console for a working day (issue 18): find anything (full-value
filters with their syntax), see what needs attention (sort, attention first), no traps
(forms, focus, Escape, burst typing), the truth when the backend is gone, details
(event JSON, jams, heartbeat charts), keys and mouse.
"""

from __future__ import annotations

from datetime import timedelta

from textual.pilot import Pilot
from textual.widgets import Input, Sparkline, Static

from backend.domain.bank import MAX_COMPARTMENTS
from backend.domain.timeutil import FrozenClock
from backend.http.client_gateway import HttpGateway
from backend.run_mode import RunMode
from backend.service import LockerService
from console.app import LockerConsoleApp
from console.modals.event_detail import EventDetailModal
from console.modals.token import TokenModal
from console.screens.bank import BankScreen
from console.screens.base import Notice
from console.screens.events import EventsScreen
from console.screens.fleet import FleetScreen
from console.screens.provisioning import ProvisioningScreen, ProvisioningTable
from console.screens.transactions import TransactionsScreen
from tests.support.console_app import OPERATOR, SIZE, Devices, MakeApp, Toasts, cell, plain, ready
from tests.support.http_api import serve_api
from tests.support.waiting import app_until
from widgets.bank_table import BankTable
from widgets.compartment_grid import CompartmentGrid
from widgets.event_log import EventTable
from widgets.heartbeat_chart import HeartbeatCharts
from widgets.status_line import StatusLine


def status(app: LockerConsoleApp) -> str:
    return plain(app.screen.query_one(StatusLine))


def notice(app: LockerConsoleApp) -> str:
    widget = app.screen.query_one(Notice)
    return plain(widget) if widget.has_class("-shown") else ""


async def filter_with(pilot: Pilot[None], query: str) -> None:
    await pilot.press("slash")
    await pilot.press(*["space" if c == " " else c for c in query])
    await pilot.press("enter")


async def clear_filter(pilot: Pilot[None]) -> None:
    await pilot.press("slash", "escape")


# ----- filters ---------------------------------------------------------------------------


async def test_filters_match_full_values_with_the_syntax(
    make_app: MakeApp, devices: Devices, service: LockerService
) -> None:
    """`offline` finds `LockerBankWentOffline` though the cell is cut; field:value, -negation
    and quotes; the fleet filters on full values of every column."""
    hall = await devices.bank("Main hall", "Berlin HQ")
    depot = await devices.bank("Depot", "Hamburg harbour west gate")
    await devices.last_will(depot)
    await service.request_open(hall, 2, actor="bob")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("3")
        await app_until(pilot, lambda: isinstance(app.screen, EventsScreen), "events")
        screen = app.screen
        table = screen.query_one(EventTable)
        await app_until(pilot, lambda: table.row_count >= 8, "the events")
        offline = next(k for k in table.keys if "Offline" in str(screen_event(screen, k)))
        assert "…" in cell(table, offline, "type")  # the cell is cut at 80 columns

        await filter_with(pilot, "offline")
        await app_until(pilot, lambda: table.keys == [offline], "offline events only")
        await clear_filter(pilot)
        await filter_with(pilot, "event:LockerBankWentOffline")
        await app_until(pilot, lambda: table.keys == [offline], "the named field")
        await clear_filter(pilot)
        await filter_with(pilot, '"main hall" action:open')
        await app_until(pilot, lambda: table.row_count == 1, "quoted words and a field")
        only = screen_event(screen, table.keys[0])
        assert only.event_type == "CompartmentOpeningRequested"
        assert only.metadata["actor"] == "bob"
        await clear_filter(pilot)
        await filter_with(pilot, "-bank:depot -bank:hall")
        await app_until(pilot, lambda: table.row_count == 0, "negations exclude everything")
        assert "Nothing matches" in notice(app)
        await clear_filter(pilot)
        await filter_with(pilot, "actor:bob")  # the whole payload and metadata are searched
        await app_until(pilot, lambda: table.row_count == 1, "by actor")

        await pilot.press("1")
        fleet = app.screen
        assert isinstance(fleet, FleetScreen)
        banks = fleet.query_one(BankTable)
        await filter_with(pilot, "status:offline")
        await app_until(pilot, lambda: banks.keys == [depot], "offline banks")
        await clear_filter(pilot)
        await filter_with(pilot, "west gate")  # in the cut part of the location
        await app_until(pilot, lambda: banks.keys == [depot], "the full location")
        assert cell(banks, depot, "location").endswith("…")
        await clear_filter(pilot)
        await filter_with(pilot, "-status:offline")
        await app_until(pilot, lambda: banks.keys == [hall], "negated field")


def screen_event(screen: object, key: str) -> object:
    assert isinstance(screen, EventsScreen)
    return next(e for e in screen.data or [] if str(e.position) == key)


async def test_event_history_beyond_the_tail_is_searched_by_the_backend(
    make_app: MakeApp, devices: Devices, service: LockerService, monkeypatch: object
) -> None:
    """The console keeps only a tail of the log; a filter also asks the backend, which
    searches the whole stored history."""
    from console import context

    old = await devices.bank("Old bank", "Cellar")
    await devices.last_will(old)
    for index in range(12):
        await devices.bank(f"Filler {index}", online=False)
    monkeypatch.setattr(context, "EVENT_TAIL", 10)  # type: ignore[attr-defined]  # the module's constant, patched
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert all(e.aggregate_uuid != old for e in app.ctx.events)  # not in the tail
        await pilot.press("3")
        table = app.screen.query_one(EventTable)
        await filter_with(pilot, "offline")
        await app_until(pilot, lambda: table.row_count == 1, "the old offline event")


# ----- sorting and attention -------------------------------------------------------------


async def test_sort_natural_order_attention_first_and_the_cursor_stays(
    make_app: MakeApp, devices: Devices, clock: FrozenClock
) -> None:
    uuids = {name: await devices.bank(name, "Site") for name in ("Demo 100", "Demo 9", "Demo 11")}
    uuids["Demo 10"] = await devices.bank("Demo 10", "Site")
    await devices.last_will(uuids["Demo 11"])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        by_name = [uuids[n] for n in ("Demo 9", "Demo 10", "Demo 100")]
        # attention first (the offline bank), then names in natural order
        await app_until(pilot, lambda: table.keys == [uuids["Demo 11"], *by_name], "attention")
        table.move_to_key(uuids["Demo 10"])
        await pilot.press("s")  # by name
        natural = [uuids[n] for n in ("Demo 9", "Demo 10", "Demo 11", "Demo 100")]
        await app_until(pilot, lambda: table.keys == natural, "natural order")
        assert table.cursor_key == uuids["Demo 10"]
        assert "name▲" in str(table.columns[table.ordered_columns[0].key].label)
        await pilot.press("S")
        await app_until(pilot, lambda: table.keys == natural[::-1], "reversed")
        assert table.cursor_key == uuids["Demo 10"]
        # a live change re-sorts under the cursor without moving it off its bank
        await devices.last_will(uuids["Demo 10"])
        await app_until(pilot, lambda: cell(table, uuids["Demo 10"], "status") == "offline", "")
        assert table.cursor_key == uuids["Demo 10"]
        # a header click sorts by that column (status: offline before online)
        status_x = sum(c.get_render_width(table) for c in table.ordered_columns[:2]) + 2
        await pilot.click(BankTable, offset=(status_x, 0))
        await app_until(pilot, lambda: table.sort_column == "status", "sorted by status")
        assert set(table.keys[:2]) == {uuids["Demo 10"], uuids["Demo 11"]}
        assert table.cursor_key == uuids["Demo 10"]
        for _ in range(len(table.COLUMNS) - 3):  # heartbeat, doors, config, pending
            await pilot.press("s")
        assert table.sort_column == "pending"
        await pilot.press("s")
        assert table.sort_column is None  # back to attention
        await app_until(pilot, lambda: table.keys[0] in (uuids["Demo 10"], uuids["Demo 11"]), "")


async def test_jk_gG_home_end_in_tables(make_app: MakeApp, devices: Devices) -> None:
    names = [f"Bank {n}" for n in range(1, 6)]
    uuids = [await devices.bank(name, online=False) for name in names]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: table.keys == uuids, "the banks")
        table.focus()
        await pilot.press("j", "j")
        assert table.cursor_key == uuids[2]
        await pilot.press("k")
        assert table.cursor_key == uuids[1]
        await pilot.press("G")
        assert table.cursor_key == uuids[-1]
        await pilot.press("g")
        assert table.cursor_key == uuids[0]
        await pilot.press("end")
        assert table.cursor_key == uuids[-1]
        await pilot.press("home")
        assert table.cursor_key == uuids[0]


# ----- forms -----------------------------------------------------------------------------


async def go_provisioning(pilot: Pilot[None], app: LockerConsoleApp) -> ProvisioningScreen:
    await ready(pilot, app)
    await pilot.press("4")
    await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "provisioning")
    screen = app.screen
    assert isinstance(screen, ProvisioningScreen)
    return screen


async def test_burst_typing_lands_every_key_in_its_field(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await go_provisioning(pilot, app)
        await pilot.press("n")
        # One burst, no pause between keys: Tab moves on, nothing lands in the field before.
        keys = [*"abc", "tab", *"def", "tab", "end", "backspace", "backspace", *"77", "tab"]
        await pilot.press(*keys, "end", "backspace", "backspace", "9")
        assert screen.query_one("#new-name", Input).value == "abc"
        assert screen.query_one("#new-location", Input).value == "def"
        assert screen.query_one("#new-doors", Input).value == "77"
        assert screen.query_one("#new-interval", Input).value == "9"
        await pilot.press("shift+tab", "shift+tab", "shift+tab", "end", *"xyz")
        assert screen.query_one("#new-name", Input).value == "abcxyz"


async def test_focus_after_submit_escape_leaves_a_field_limits_from_the_domain(
    make_app: MakeApp, service: LockerService, toasts: Toasts
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        screen = await go_provisioning(pilot, app)
        name = screen.query_one("#new-name", Input)
        await pilot.press("n")
        assert app.focused is name and name.has_pseudo_class("focus")
        await pilot.press("escape")  # leaves the field, keeps what was typed
        assert isinstance(app.focused, ProvisioningTable)
        await pilot.press("n", *"Hall")
        doors = screen.query_one("#new-doors", Input)
        assert doors.max_length == len(str(MAX_COMPARTMENTS))
        doors.value = str(MAX_COMPARTMENTS + 1)
        await pilot.press("enter")
        await app_until(pilot, lambda: toasts.matching("doors must be between 1 and 1000"), "")
        assert await service.list_banks() == []
        doors.value = str(MAX_COMPARTMENTS)
        name.focus()
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, TokenModal), "the token")
        await pilot.press("escape")
        await app_until(pilot, lambda: app.screen is screen, "back")
        assert isinstance(app.focused, ProvisioningTable)  # not the form
        banks = await service.list_banks()
        assert [(b.name, len(b.compartments)) for b in banks] == [("Hall", MAX_COMPARTMENTS)]
        table = screen.query_one(ProvisioningTable)
        await app_until(pilot, lambda: table.cursor_key == banks[0].uuid, "the new bank")
        assert name.value == ""
        await pilot.press("1")  # a key after submitting acts, it is not typed anywhere
        await app_until(pilot, lambda: isinstance(app.screen, FleetScreen), "the fleet")
        fleet = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: cell(fleet, banks[0].uuid, "doors") == "0/1000", "")


# ----- empty states, tabs ------------------------------------------------------------------


async def test_empty_fleet_says_what_to_do_and_n_creates(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await app_until(pilot, lambda: "No banks yet" in notice(app), "the empty state")
        assert "press n" in notice(app) and "locker-console --demo" in notice(app)
        tabs = str(app.screen.query_one("ModeTabs").render())
        assert all(word in tabs for word in ("1 Fleet", "2 Txns", "3 Events", "4 Prov"))
        await pilot.press("n")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "the form")
        assert app.focused is app.screen.query_one("#new-name", Input)
        await pilot.press("escape", "2")
        await app_until(pilot, lambda: isinstance(app.screen, TransactionsScreen), "txns")
        await app_until(pilot, lambda: "No commands yet" in notice(app), "empty transactions")


# ----- attach with a dead backend ----------------------------------------------------------


async def test_attach_with_a_dead_backend_says_so_everywhere(
    service: LockerService, devices: Devices, clock: FrozenClock
) -> None:
    hall = await devices.bank("Main hall", "Berlin")
    depot = await devices.bank("Depot", "Hamburg")
    async with serve_api(service) as api:
        gateway = HttpGateway(api.base_url, api.operator_token, timeout=2.0)
        await gateway.whoami()
        app = LockerConsoleApp(gateway, clock=clock, refresh_interval=0.1, run_mode=RunMode.ATTACH)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await ready(pilot, app)
                table = app.screen.query_one(BankTable)
                await app_until(pilot, lambda: cell(table, hall, "status") == "online", "")
                assert "database ok" in status(app) and "attach" in status(app)
                clock.advance(1)  # before it goes: the first failed call may come during close
                since = clock.now().strftime("%H:%M:%S UTC")
                await api.client.close()  # the backend goes away
                words = f"backend unreachable since {since}"
                await app_until(pilot, lambda: words in status(app), "the status line")
                assert "database" not in status(app) and "broker" not in status(app)
                await app_until(pilot, lambda: words in notice(app), "the fleet's notice")
                assert "what you see is from" in notice(app)

                table.move_to_key(depot)  # a bank never fetched before
                await pilot.press("enter")
                await app_until(pilot, lambda: isinstance(app.screen, BankScreen), "bank")
                bank = app.screen
                grid = bank.query_one(CompartmentGrid)
                await app_until(pilot, lambda: words in str(grid.render()), "the grid")
                assert "no compartments" not in str(grid.render())
                assert words in plain(bank.query_one("#bank-status", Static))
                charts = bank.query_one(HeartbeatCharts)
                assert words in plain(charts.query_one("#chart-empty", Static))
                assert "nothing to show until it answers" in notice(app)
                for key in ("escape", "3", "2", "4"):
                    await pilot.press(key)
                    await app_until(pilot, lambda: words in notice(app), f"notice after {key}")
                    assert words in status(app)
        finally:
            await gateway.close()


# ----- detail views ------------------------------------------------------------------------


async def test_bank_screen_event_log_detail_jam_and_heartbeat_charts(
    make_app: MakeApp, devices: Devices, service: LockerService, clock: FrozenClock
) -> None:
    hall = await devices.bank("Main hall", "Berlin")
    for _ in range(5):
        clock.advance(30)
        await devices.heartbeat(hall)
    jam = await service.request_open(hall, 4, actor=OPERATOR)
    await devices.relay()
    await devices.answer(hall, jam.transaction_id, result="error", error_code="DOOR_JAMMED")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: table.keys == [hall], "the bank")
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, BankScreen), "the bank screen")
        bank = app.screen
        assert isinstance(bank, BankScreen)
        await app_until(pilot, lambda: bank.data is not None, "its data")
        grid = bank.query_one(CompartmentGrid)
        assert "#4   jammed" in str(grid.render())
        charts = bank.query_one(HeartbeatCharts)
        await app_until(pilot, lambda: not charts.has_class("-empty"), "the charts")
        intervals = list(charts.query_one("#chart-interval", Sparkline).data or [])
        assert len(intervals) == 60 and 30.0 in intervals
        assert "-60m" in plain(charts.query_one("#chart-axis", Static))
        await pilot.press("l")
        events = bank.query_one("#bank-events", EventTable)
        await app_until(pilot, lambda: events.row_count >= 5, "the bank's event log")
        events.focus()
        failed = next(e for e in bank.data.events if e.event_type == "CommandFailed")
        events.move_to_key(str(failed.position))
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, EventDetailModal), "the detail")
        text = plain(app.screen.query_one("#event-json", Static))
        assert '"error_code": "DOOR_JAMMED"' in text and jam.transaction_id in text
        await pilot.press("escape")
        await app_until(pilot, lambda: app.screen is bank, "back on the bank")
        # the transaction timeline: enter on a transaction of this bank
        from console.modals.timeline import TimelineModal
        from widgets.transaction_timeline import TransactionTable

        await pilot.press("t")
        transactions = bank.query_one("#bank-transactions", TransactionTable)
        transactions.focus()
        transactions.move_to_key(jam.transaction_id)
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, TimelineModal), "the timeline")
        steps = plain(app.screen.query_one("#timeline", Static))
        assert "requested" in steps and "DOOR_JAMMED" in steps and "→  sent" in steps
        await pilot.press("escape")


# ----- mouse -------------------------------------------------------------------------------


async def test_mouse_selects_rows_tabs_and_buttons(
    make_app: MakeApp, devices: Devices, service: LockerService
) -> None:
    first = await devices.bank("Alpha", online=False)
    second = await devices.bank("Bravo", online=False)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: table.keys == [first, second], "the banks")
        await pilot.click(BankTable, offset=(3, 2))  # the second row (header, Alpha, Bravo)
        assert table.cursor_key == second
        tabs = app.screen.query_one("ModeTabs")
        label = str(tabs.render())
        await pilot.click("ModeTabs", offset=(label.index("3 Events") + 2, 0))
        await app_until(pilot, lambda: isinstance(app.screen, EventsScreen), "clicked tab")
        await pilot.press("4")
        screen = await go_provisioning(pilot, app)
        screen.query_one("#new-name", Input).value = "Clicked"
        await pilot.click("#create")
        await app_until(pilot, lambda: isinstance(app.screen, TokenModal), "the token")
        assert [b.name for b in await service.list_banks()][-1] == "Clicked"


def test_heartbeat_buckets_over_the_last_hour() -> None:
    from datetime import datetime

    from backend.views import HeartbeatSample
    from widgets.heartbeat_chart import per_minute, time_axis

    now = datetime.fromisoformat("2026-01-01T12:00:00+00:00")
    arrivals = [now - timedelta(minutes=50) + timedelta(seconds=30 * i) for i in range(10)]
    samples = [HeartbeatSample(received_at=at, lag_seconds=0.5) for at in arrivals]
    intervals, lags = per_minute(samples, now)
    assert len(intervals) == len(lags) == 60
    assert intervals[10:15] == [30.0] * 5  # minutes 10-14 of the hour
    assert lags[10] == 0.5 and lags[20] == 0.0
    assert intervals[-1] == (now - arrivals[-1]).total_seconds()  # the silence so far
    axis = time_axis(60).plain
    assert axis.startswith("-60m") and axis.rstrip().endswith("now") and "-30m" in axis


# ----- alerts ------------------------------------------------------------------------------


async def test_alert_list_counter_and_acknowledge_with_a_note(
    make_app: MakeApp, devices: Devices, service: LockerService
) -> None:
    from console.modals.note import NoteModal
    from console.screens.alerts import AlertsScreen
    from widgets.alert_list import AlertTable

    hall = await devices.bank("Main hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert "alert" not in status(app)
        await devices.last_will(hall)
        await app_until(pilot, lambda: "1 alert (5)" in status(app), "the counter")
        await pilot.press("5")
        await app_until(pilot, lambda: isinstance(app.screen, AlertsScreen), "screen 5")
        table = app.screen.query_one(AlertTable)
        await app_until(pilot, lambda: table.row_count == 1, "the alert")
        key = table.keys[0]
        assert cell(table, key, "state") == "open" and "offline" in cell(table, key, "kind")
        await pilot.press("a")
        await app_until(pilot, lambda: isinstance(app.screen, NoteModal), "the note")
        await pilot.press(*"on it", "enter")
        await app_until(pilot, lambda: cell(table, key, "state") == "seen", "acknowledged")
        await app_until(pilot, lambda: "alert" not in status(app), "the counter at zero")
        (alert,) = await service.list_alerts()
        assert alert.acknowledged_by == OPERATOR and alert.ack_note == "on it"
        await filter_with(pilot, "seen -state:open alice")  # the note and who, in full values
        await app_until(pilot, lambda: table.keys == [key], "found by who acknowledged it")


# ----- bank editing ------------------------------------------------------------------------


async def test_edit_a_bank_from_its_screen_through_update_bank(
    make_app: MakeApp, devices: Devices, service: LockerService, toasts: Toasts
) -> None:
    from console.modals.edit_bank import EditBankModal

    hall = await devices.bank("Main hall", "Berlin", doors=3)
    app = make_app()
    async with app.run_test(size=(120, 40), notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: table.keys == [hall], "the bank")
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, BankScreen), "the bank screen")
        bank_screen = app.screen
        await app_until(pilot, lambda: bank_screen.data is not None, "its data")  # type: ignore[attr-defined]  # a BankScreen here
        await pilot.press("e")
        await app_until(pilot, lambda: isinstance(app.screen, EditBankModal), "the form")
        form = app.screen
        name = form.query_one("#edit-name", Input)
        assert app.focused is name and name.value == "Main hall"
        assert form.query_one("#edit-mapping", Input).value == "1:1:0,2:1:1,3:1:2"
        # a bad interval is named, nothing is sent
        form.query_one("#edit-interval", Input).value = "0"
        await pilot.press("enter")
        assert "heartbeat interval must be 1 to 3600" in plain(
            form.query_one("#edit-error", Static)
        )
        assert app.screen is form
        form.query_one("#edit-interval", Input).value = "45"
        await pilot.press("end", *" West")
        form.query_one("#edit-mapping", Input).value = "1:1:0,2:1:1,3:1:2,4:1:3"
        await pilot.press("escape")  # leaves the field, the form stays
        assert app.screen is form and not isinstance(app.focused, Input)
        await pilot.click("#save")
        await app_until(pilot, lambda: app.screen is bank_screen, "saved and back")
        await app_until(pilot, lambda: toasts.matching("Bank edited"), "the confirmation")
        saved = await service.get_bank(hall)
        assert (saved.name, saved.location, saved.heartbeat_interval_seconds) == (
            "Main hall West",
            "Berlin",
            45,
        )
        assert len(saved.compartments) == 4
        pushes = [t for t in await service.list_transactions(hall) if t.action == "apply_config"]
        assert any(t.requested_by == OPERATOR for t in pushes)  # the new mapping goes out
        grid = bank_screen.query_one(CompartmentGrid)
        await app_until(pilot, lambda: "#4" in str(grid.render()), "the fourth door")
        await pilot.press("e", "escape", "escape")  # Esc leaves the field, then cancels
        await app_until(pilot, lambda: app.screen is bank_screen, "cancelled")
        assert (await service.get_bank(hall)).name == "Main hall West"
