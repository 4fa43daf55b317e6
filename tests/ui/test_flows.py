"""Pilot tests of the operator's flows, against a real LockerService on SQLite.

State changes on the device side go through the service directly (register, heartbeat,
relay, response, last will); the console must show each one on its own.
"""

from __future__ import annotations

import pytest
from textual.command import CommandInput, CommandList, CommandPalette
from textual.widgets import Static

from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from backend.views import TransactionView
from console.modals.confirm import ConfirmModal
from console.modals.revoke import RevokeModal
from console.modals.token import TokenModal
from console.screens.bank import BankScreen
from console.screens.fleet import FleetScreen
from console.screens.provisioning import ProvisioningScreen
from console.screens.transactions import TransactionsScreen
from tests.support.console_app import (
    SIZE,
    Broker,
    Devices,
    MakeApp,
    Toasts,
    cell,
    modal_text,
    open_bank,
    plain,
    ready,
    type_text,
)
from tests.support.waiting import app_until
from widgets.bank_table import BankTable
from widgets.compartment_grid import CompartmentGrid
from widgets.keyed_table import KeyedTable
from widgets.status_line import StatusLine
from widgets.transaction_timeline import TransactionDetail, TransactionTable


async def test_create_bank_shows_its_token_once(
    make_app: MakeApp, service: LockerService, toasts: Toasts
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        await pilot.press("4")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "provisioning")
        await pilot.press("n")
        await type_text(pilot, "Main hall")
        await pilot.press("tab")
        await type_text(pilot, "Berlin")
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, TokenModal), "the token modal")

        (bank,) = await service.list_banks()
        assert (bank.name, bank.location, len(bank.compartments)) == ("Main hall", "Berlin", 12)
        token = plain(app.screen.query_one("#token", Static))
        assert token == "secret-0001"
        assert await service.bank_by_token(token) == bank.uuid
        shown = modal_text(app)
        assert "expires 2026-01-08 12:00:00 UTC" in shown
        assert bank.uuid in shown and "Shown once" in shown

        await pilot.press("c")
        assert app.clipboard == token
        await pilot.press("escape")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "modal closed")
        table = app.screen.query_one(KeyedTable)
        await app_until(pilot, lambda: bank.uuid in table.keys, "the new bank in the list")
        assert cell(table, bank.uuid, "status") == "unprovisioned"
        assert cell(table, bank.uuid, "token").startswith("valid 7d")

        # Not again: no screen shows it, and the only way back is a new token.
        for key in ("4", "1", "2", "3", "4"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert token not in app.export_screenshot()
        assert not any(isinstance(s, TokenModal) for s in app.screen_stack)


async def test_bank_goes_online_when_its_device_provisions_and_beats(
    make_app: MakeApp, devices: Devices
) -> None:
    uuid = await devices.bank("Main hall", "Berlin", online=False)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(
            pilot, lambda: cell(table, uuid, "status") == "unprovisioned", "unprovisioned"
        )
        assert cell(table, uuid, "heartbeat").startswith("never")
        await devices.provision(uuid)
        await app_until(pilot, lambda: cell(table, uuid, "status") == "provisioned", "provisioned")
        await devices.heartbeat(uuid)
        await app_until(pilot, lambda: cell(table, uuid, "status") == "online", "online")
        assert cell(table, uuid, "heartbeat").startswith("0s ago")


async def test_open_a_compartment_with_confirmation_pending_sent_success(
    make_app: MakeApp, devices: Devices, service: LockerService, clock: FrozenClock, toasts: Toasts
) -> None:
    uuid = await devices.bank("Main hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        screen = await open_bank(pilot, app, uuid)
        grid = screen.query_one(CompartmentGrid)
        await pilot.press("right", "right")
        assert grid.selected is not None and grid.selected.number == 3
        await pilot.press("o")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        shown = modal_text(app)
        assert "Open compartment 3?" in shown
        assert "Main hall" in shown and "Berlin" in shown and "compartment 3" in shown

        # What is opened is what the modal named, whatever the cursor does meanwhile.
        grid.select(5)
        await pilot.press("y")
        await app_until(pilot, lambda: app.screen is screen, "the bank screen again")

        def opening() -> TransactionView | None:
            data = screen.data
            txns = data.transactions if data else []
            return next((t for t in txns if t.action == "open_compartment"), None)

        await app_until(pilot, lambda: opening() is not None, "the open transaction")
        txn = opening()
        assert txn is not None and txn.compartment_number == 3
        tid = txn.transaction_id
        assert txn.requested_by == "alice"
        table = screen.query_one(TransactionTable)
        await app_until(pilot, lambda: cell(table, tid, "status") == "pending", "pending")
        assert cell(table, tid, "action") == "open #3"

        assert tid in await devices.relay()
        await app_until(pilot, lambda: cell(table, tid, "status") == "sent", "sent")

        clock.advance(0.4)
        await devices.answer(uuid, tid)
        await app_until(pilot, lambda: cell(table, tid, "status") == "success", "success")
        assert cell(table, tid, "latency") == "0.40s"
        await app_until(
            pilot, lambda: grid.selected is not None and grid.selected.number == 5, "cursor kept"
        )

        def door_3() -> str:
            bank = screen.data.bank  # type: ignore[union-attr]  # loaded: waited for above
            return next(c.door_state for c in bank.compartments if c.number == 3)

        await app_until(pilot, lambda: door_3() == "open", "door 3 open in the grid")
        await app_until(
            pilot,
            lambda: toasts.matching("Compartment 3 on Main hall (Berlin) opened in 0.40s"),
            "the success toast",
        )
        others = [t for t in await service.list_transactions(uuid) if t.compartment_number == 5]
        assert others == []


async def test_jammed_door_shows_the_error(
    make_app: MakeApp, devices: Devices, toasts: Toasts
) -> None:
    uuid = await devices.bank("Main hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        screen = await open_bank(pilot, app, uuid)
        await pilot.press("o")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("y")
        table = screen.query_one(TransactionTable)

        def opening_id() -> str | None:
            data = screen.data
            txns = data.transactions if data else []
            return next((t.transaction_id for t in txns if t.action == "open_compartment"), None)

        await app_until(pilot, lambda: opening_id() is not None, "the open transaction")
        tid = opening_id()
        assert tid is not None
        await devices.relay()
        await app_until(pilot, lambda: cell(table, tid, "status") == "sent", "sent")
        await devices.answer(
            uuid, tid, result="error", error_code="DOOR_JAMMED", message="Door 1 is jammed"
        )
        await app_until(pilot, lambda: cell(table, tid, "status") == "error", "error")
        assert cell(table, tid, "result") == "DOOR_JAMMED"
        await app_until(pilot, lambda: toasts.matching("DOOR_JAMMED"), "the error toast")
        (toast,) = toasts.matching("DOOR_JAMMED")
        assert toast.severity == "error"
        assert toast.message == (
            "Opening compartment 1 on Main hall (Berlin) failed: DOOR_JAMMED — Door 1 is jammed."
        )

        await pilot.press("2")
        await app_until(pilot, lambda: isinstance(app.screen, TransactionsScreen), "transactions")
        log = app.screen.query_one(TransactionTable)
        await app_until(pilot, lambda: cell(log, tid, "status") == "error", "the error row")
        log.move_to_key(tid)
        detail = app.screen.query_one(TransactionDetail)
        await app_until(pilot, lambda: "DOOR_JAMMED" in plain(detail), "the timeline")
        assert "requested 12:00:00 by alice" in plain(detail)


async def test_offline_and_a_toast_after_the_last_will(
    make_app: MakeApp, devices: Devices, toasts: Toasts
) -> None:
    """The row turns offline and a toast says why. How fast is the console benchmark's
    business (bench/console.py), not a timed assert's: a 1 s bound here failed a CI run
    on a loaded machine."""
    uuid = await devices.bank("Main hall", "Berlin")
    app = make_app(refresh_interval=0.05)
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: cell(table, uuid, "status") == "online", "online")
        await devices.last_will(uuid)
        await app_until(pilot, lambda: cell(table, uuid, "status") == "offline", "offline")
        await app_until(
            pilot,
            lambda: toasts.matching("Main hall (Berlin) went offline (last will)."),
            "the offline toast",
        )


async def test_readonly_offers_no_action(
    make_app: MakeApp, devices: Devices, service: LockerService
) -> None:
    uuid = await devices.bank("Main hall", "Berlin")
    before = await service.list_transactions()
    app = make_app(readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert "p" not in app.screen.active_bindings
        await pilot.press("p")
        screen = await open_bank(pilot, app, uuid)
        assert "o" not in screen.active_bindings
        await pilot.press("o")
        await pilot.press("enter")  # Enter on the grid asks to open when not read-only
        await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        assert app.screen is screen
        assert await service.list_transactions() == before

        # The palette has no action at all, not even when searched for.
        await pilot.press("ctrl+p")
        await app_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await type_text(pilot, "open")
        commands = app.screen.query_one(CommandList)
        await app_until(
            pilot,
            lambda: (
                commands.option_count == 1 and commands.get_option_at_index(0).id == "--no-matches"
            ),
            "no matches",
        )
        await pilot.press("escape")
        commands_here = list(app.commands_for(screen))
        assert commands_here and not [c for c in commands_here if c.changes_state]

        await pilot.press("escape", "4")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "provisioning")
        assert not app.screen.query("#new-name")
        for key in ("n", "t", "r"):
            assert key not in app.screen.active_bindings
            await pilot.press(key)
        await pilot.pause(0.2)
        assert isinstance(app.screen, ProvisioningScreen)
        assert len(await service.list_banks()) == 1


async def test_palette_offers_opening_a_compartment(make_app: MakeApp, devices: Devices) -> None:
    uuid = await devices.bank("Main hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await open_bank(pilot, app, uuid)
        await pilot.press("ctrl+p")
        await app_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        app.screen.query_one(CommandInput).value = "open compartment 7"
        commands = app.screen.query_one(CommandList)

        def first() -> str:
            return str(commands.get_option_at_index(0).prompt)

        await app_until(pilot, lambda: "Open compartment 7: Main hall" in first(), "the command")
        await pilot.press("enter")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        assert "Open compartment 7?" in modal_text(app)
        await pilot.press("n")
        await app_until(pilot, lambda: isinstance(app.screen, BankScreen), "cancelled")


async def test_broker_drop_is_toasted_and_shown_in_words(
    make_app: MakeApp, devices: Devices, broker: Broker, toasts: Toasts
) -> None:
    await devices.bank("Main hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        line = app.screen.query_one(StatusLine)
        await app_until(pilot, lambda: "broker connected" in plain(line), "connected")
        assert "database ok" in plain(line)
        broker.connected, broker.detail = False, "connection refused"
        await app_until(pilot, lambda: "broker disconnected" in plain(line), "disconnected")
        await app_until(pilot, lambda: toasts.matching("Broker disconnected"), "the toast")
        (toast,) = toasts.matching("Broker disconnected")
        assert toast.severity == "error" and "connection refused" in toast.message


async def test_filter_is_kept_per_screen_and_updates_keep_order_and_cursor(
    make_app: MakeApp, devices: Devices, clock: FrozenClock
) -> None:
    first = await devices.bank("Alpha", "Berlin")
    second = await devices.bank("Bravo", "Hamburg")
    third = await devices.bank("Charlie", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        table = app.screen.query_one(BankTable)
        await app_until(pilot, lambda: table.keys == [first, second, third], "three banks")
        table.move_to_key(second)
        clock.advance(5)
        await devices.heartbeat(first)
        await devices.last_will(third)
        await app_until(pilot, lambda: cell(table, third, "status") == "offline", "offline")
        await app_until(pilot, lambda: cell(table, first, "heartbeat").startswith("0s"), "beat")
        assert table.keys == [third, first, second]  # needs attention first: offline
        assert table.cursor_key == second  # the cursor stayed on its bank

        await pilot.press("slash")
        await type_text(pilot, "berlin")
        await pilot.press("enter")
        await app_until(pilot, lambda: table.keys == [third, first], "filtered")
        await pilot.press("2")
        await app_until(pilot, lambda: isinstance(app.screen, TransactionsScreen), "other tab")
        assert app.screen.query_text == ""
        await pilot.press("1")
        await app_until(pilot, lambda: isinstance(app.screen, FleetScreen), "fleet again")
        assert app.screen.query_text == "berlin"
        assert table.keys == [third, first]


@pytest.mark.parametrize("readonly", [False, True], ids=["operator", "readonly"])
async def test_help_lists_the_keys_that_apply(
    make_app: MakeApp, devices: Devices, readonly: bool
) -> None:
    uuid = await devices.bank("Main hall", "Berlin")
    app = make_app(readonly=readonly)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await open_bank(pilot, app, uuid)
        await pilot.press("question_mark")
        await app_until(pilot, lambda: "Help · Bank" in modal_text(app), "help")
        text = modal_text(app)
        assert "Filter" in text and "Back" in text
        assert ("Open door" in text) is not readonly
        assert "online" in text and "in sync" in text and "timeout" in text
        await pilot.press("escape")
        await app_until(pilot, lambda: isinstance(app.screen, BankScreen), "help closed")


async def test_reissue_and_revoke_ask_first(
    make_app: MakeApp, devices: Devices, service: LockerService, toasts: Toasts
) -> None:
    depot = await devices.bank("Depot", "Leipzig", online=False)
    hall = await devices.bank("Main hall", "Berlin")
    old_token = devices.tokens[depot]
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        await pilot.press("4")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "provisioning")
        table = app.screen.query_one(KeyedTable)
        await app_until(pilot, lambda: table.keys == [depot, hall], "the banks")
        table.move_to_key(depot)

        await pilot.press("t")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        assert "previous token stops working" in modal_text(app)
        await pilot.press("y")
        await app_until(pilot, lambda: isinstance(app.screen, TokenModal), "the new token")
        new_token = plain(app.screen.query_one("#token", Static))
        assert new_token != old_token and "no longer works" in modal_text(app)
        assert await service.bank_by_token(new_token) == depot
        assert await service.bank_by_token(old_token) is None
        await pilot.press("escape")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "closed")

        # Revoking asks for a reason (required), works in any state and voids the token.
        await pilot.press("r")
        await app_until(pilot, lambda: isinstance(app.screen, RevokeModal), "the reason dialog")
        await pilot.press("enter")  # no reason yet: nothing happens
        assert isinstance(app.screen, RevokeModal)
        await type_text(pilot, "token leaked")
        await pilot.press("enter")
        await app_until(pilot, lambda: cell(table, depot, "status") == "revoked", "revoked")
        assert await service.bank_by_token(new_token) is None

        table.move_to_key(hall)
        await pilot.press("r")
        await app_until(pilot, lambda: isinstance(app.screen, RevokeModal), "the reason dialog")
        assert "Revoke this bank's credentials?" in modal_text(app)
        assert "Main hall" in modal_text(app)
        await pilot.press("escape")  # cancelled: nothing happens
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "cancelled")
        assert (await service.get_bank(hall)).status == "online"
        await pilot.press("r")
        await app_until(pilot, lambda: isinstance(app.screen, RevokeModal), "the reason dialog")
        await type_text(pilot, "stolen")
        await pilot.press("enter")
        await app_until(pilot, lambda: cell(table, hall, "status") == "revoked", "revoked")
        reasons = [
            e.payload["reason"]
            for e in await service.events_after(0)
            if e.event_type == "CredentialsRevoked"
        ]
        assert reasons == ["token leaked", "stolen"]
