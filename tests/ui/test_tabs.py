"""The top-level screens: each declared once on its class (`TAB`), found by
`top_level_screens()`, and reachable by its key, its tab and its palette command."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from console.app import LockerConsoleApp
from console.screens.base import LiveScreen
from console.screens.tabs import Tab, declare, top_level_screens
from tests.support.console_app import SIZE, ready
from tests.support.waiting import app_until
from widgets.mode_tabs import ModeTabs

MakeApp = Callable[..., LockerConsoleApp]


def test_the_declared_tabs_in_key_order() -> None:
    declared = top_level_screens()
    tabs = [(t.key, t.name, t.label, t.tab_label) for t, _ in declared]
    assert tabs[:5] == [
        ("1", "fleet", "Fleet", "Fleet"),
        ("2", "transactions", "Transactions", "Txns"),
        ("3", "events", "Events", "Events"),
        ("4", "provisioning", "Provisioning", "Prov"),
        ("5", "alerts", "Alerts", "Alerts"),
    ]
    assert [t.key for t, _ in declared] == sorted({t.key for t, _ in declared})
    assert len({t.name for t, _ in declared}) == len(declared)
    for tab, screen in declared:
        assert isinstance(screen, type) and issubclass(screen, LiveScreen)
        assert screen.TAB is tab
        assert (tab.name, tab.label) == (screen.MODE, screen.SCREEN_TITLE)


def test_two_screens_may_not_share_a_key_or_a_name() -> None:
    (fleet, _), *_ = top_level_screens()
    with pytest.raises(ValueError, match="clashes"):
        declare(Tab(fleet.key, "elsewhere", "Elsewhere"), lambda ctx: LiveScreen(ctx))
    with pytest.raises(ValueError, match="clashes"):
        declare(Tab("0", fleet.name, "Elsewhere"), lambda ctx: LiveScreen(ctx))
    assert [t.name for t, _ in top_level_screens()].count(fleet.name) == 1


async def test_each_tab_is_reached_by_its_key_and_offered_in_the_palette(
    make_app: MakeApp,
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        commands = {c.name for c in app.commands_for(app.screen)}
        for tab, screen in reversed(top_level_screens()):
            assert f"Show {tab.label.lower()}" in commands
            await pilot.press(tab.key)
            await app_until(pilot, lambda s=screen: type(app.screen) is s, tab.label)
            assert app.current_mode == tab.name
            assert app.screen.query_one(ModeTabs)._current == tab.name
