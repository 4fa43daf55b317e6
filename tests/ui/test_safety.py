"""Issue 15 in the console (Pilot): the offline warning in the open confirmation, the quit
confirmation in standalone mode, actions an `app` token cannot take are not offered, and a
late execution is never shown as "Done"."""

from __future__ import annotations

from backend.domain.timeutil import FrozenClock
from backend.gateway import InProcessGateway
from backend.run_mode import RunMode
from backend.service import LockerService
from console.app import LockerConsoleApp
from console.modals.confirm import ConfirmModal
from console.screens.provisioning import ProvisioningScreen
from tests.support.console_app import (
    OPERATOR,
    SIZE,
    Devices,
    MakeApp,
    Toasts,
    modal_text,
    open_bank,
    ready,
)
from tests.support.waiting import app_until


async def test_opening_on_an_offline_bank_says_what_will_happen(
    make_app: MakeApp, devices: Devices, service: LockerService
) -> None:
    uuid = await devices.bank("Depot", "Hamburg")
    await devices.last_will(uuid)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await open_bank(pilot, app, uuid)
        await pilot.press("o")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        shown = " ".join(modal_text(app).split())
        assert "The bank is offline" in shown
        assert "waits up to 30 s" in shown and "then expires and never opens later" in shown
        await pilot.press("n")
    online = await devices.bank("Hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await open_bank(pilot, app, online)
        await pilot.press("o")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        assert "waits up to" not in modal_text(app)  # online: no warning


async def test_quit_in_standalone_asks_first_and_says_how_many_banks_are_connected(
    make_app: MakeApp, devices: Devices
) -> None:
    await devices.bank("A")
    await devices.bank("B")
    offline = await devices.bank("C")
    await devices.last_will(offline)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await app_until(pilot, lambda: len(app.ctx.banks) == 3, "the fleet")
        await pilot.press("q")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        shown = " ".join(modal_text(app).split())
        assert "Quit and stop the services?" in shown
        assert "2 banks are connected" in shown and "whole fleet" in shown
        await pilot.press("n")  # No: the console keeps running
        await app_until(pilot, lambda: not isinstance(app.screen, ConfirmModal), "cancelled")
        assert app.is_running
        await pilot.press("q")
        await app_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "asked again")
        await pilot.press("y")
        await app_until(pilot, lambda: not app.is_running, "the console to quit")


async def test_attached_console_quits_without_asking(
    service: LockerService, clock: FrozenClock, devices: Devices
) -> None:
    await devices.bank("A")
    app = LockerConsoleApp(
        InProcessGateway(service, actor=OPERATOR), clock=clock, run_mode=RunMode.ATTACH
    )
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("q")
        await app_until(pilot, lambda: not app.is_running, "the console to quit")


async def test_an_app_token_is_offered_only_what_it_may_do(
    service: LockerService, clock: FrozenClock, devices: Devices
) -> None:
    uuid = await devices.bank("Hall", "Berlin")
    gateway = InProcessGateway(service, actor="mobile-app")
    app = LockerConsoleApp(gateway, clock=clock, run_mode=RunMode.ATTACH, role="app")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        for key in ("p", "n"):  # push config, new bank: operators only
            assert key not in app.screen.active_bindings
        screen = await open_bank(pilot, app, uuid)
        assert "o" in screen.active_bindings  # an app may open a compartment
        assert "p" not in screen.active_bindings
        names = [c.name for c in app.commands_for(screen) if c.changes_state]
        assert names and all(n.startswith("Open compartment") for n in names)
        await pilot.press("escape", "4")
        await app_until(pilot, lambda: isinstance(app.screen, ProvisioningScreen), "provisioning")
        assert not app.screen.query("#new-name")  # no create form
        for key in ("n", "t", "r"):
            assert key not in app.screen.active_bindings
        await pilot.press("n", "t", "r")
        assert len(await service.list_banks()) == 1


async def test_a_late_execution_is_never_shown_as_done(
    make_app: MakeApp, devices: Devices, service: LockerService, clock: FrozenClock, toasts: Toasts
) -> None:
    uuid = await devices.bank("Hall", "Berlin")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True, message_hook=toasts) as pilot:
        await ready(pilot, app)
        txn = await app.gateway.request_open(uuid, 2)
        app.ctx.mine.add(txn.transaction_id)
        await devices.relay()
        clock.advance(30)
        await service.devices.sweep()
        await app_until(pilot, lambda: toasts.matching("expired"), "the expiry toast")
        clock.advance(20)
        await devices.answer(uuid, txn.transaction_id)
        await app_until(pilot, lambda: toasts.matching("Late execution"), "the late toast")
        assert not toasts.matching("Done")
        assert toasts.matching("Compartment 2", "AFTER its open expired", "check the door")
        assert (await service.get_transaction(txn.transaction_id)).status == "late"
