"""The console's top-level screens (its tabs), each declared once, on its own class.

A screen that is a tab says so on its class: `TAB = Tab("2", "transactions",
"Transactions", short="Txns")`. That one declaration gives it its key binding, its place
on the tab strip, its "Show ..." palette command, its title and its Textual mode (the
factory is the class: `Screen(ctx)`). `top_level_screens()` finds them by importing every
module of `console.screens`, so a new screen is one new file there (and its test).

("Mode" in the console means a Textual mode, i.e. one of these tabs; the process's run
modes -- standalone, demo, attach, headless -- are `RunMode`, `console/run_modes.py`.)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.screen import Screen

    from console.context import ConsoleContext

ScreenFactory = Callable[["ConsoleContext"], "Screen[Any]"]


@dataclass(frozen=True)
class Tab:
    """How a top-level screen is reached: `key` shows it, `name` is its Textual mode,
    `label` names it (palette, help, title), `short` on the tab strip if given."""

    key: str
    name: str
    label: str
    short: str = ""

    @property
    def tab_label(self) -> str:
        return self.short or self.label


_declared: dict[str, tuple[Tab, ScreenFactory]] = {}


def declare(tab: Tab, factory: ScreenFactory) -> None:
    """Register a top-level screen (LiveScreen does it for every class with a `TAB`).
    Two screens may not share a key or a name."""
    for other, other_factory in _declared.values():
        if other_factory is factory:
            continue
        if tab.key == other.key or tab.name == other.name:
            raise ValueError(f"screen tab {tab} clashes with {other}")
    _declared[tab.name] = (tab, factory)


def top_level_screens() -> list[tuple[Tab, ScreenFactory]]:
    """Every declared top-level screen, in key order (the tab order)."""
    package = importlib.import_module("console.screens")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return sorted(_declared.values(), key=lambda declared: declared[0].key)
