"""The command palette provider: every console command, from the app and the current screen.

Commands that change something (open, push config, create, token, revoke) are marked;
in read-only mode they are never offered, so the palette cannot act.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen


@dataclass(frozen=True)
class PaletteCommand:
    """One palette entry."""

    name: str
    help: str
    callback: Callable[[], object]
    changes_state: bool = False
    discover: bool = True
    """Listed before anything is typed (per-bank commands only appear when searched)."""
    app_allowed: bool = False
    """A state-changing command an `app` API token may run too (opening a compartment);
    every other one is for operators and not offered to an app token."""


@runtime_checkable
class OffersCommands(Protocol):
    """An app or screen that contributes palette commands."""

    def palette_commands(self) -> Iterable[PaletteCommand]: ...


@runtime_checkable
class ConsoleCommandSource(Protocol):
    """The app: its commands for a given screen, and whether it may act."""

    readonly: bool
    role: str

    def commands_for(self, screen: Screen[object]) -> Iterable[PaletteCommand]: ...


class ConsoleCommands(Provider):
    """Palette hits for the console's commands (filtered by read-only mode)."""

    def _commands(self) -> list[PaletteCommand]:
        app = self.app
        if not isinstance(app, ConsoleCommandSource):
            return []
        commands = list(app.commands_for(self.screen))
        if app.readonly:
            commands = [c for c in commands if not c.changes_state]
        elif app.role == "app":  # actions a role cannot take are not offered
            commands = [c for c in commands if not c.changes_state or c.app_allowed]
        return commands

    async def discover(self) -> Hits:
        for command in self._commands():
            if command.discover:
                yield DiscoveryHit(command.name, command.callback, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                shown = matcher.highlight(command.name)
                yield Hit(score, shown, command.callback, text=command.name, help=command.help)
