"""Events: the live log of stored events by position; filterable; pause and follow.

The app polls `events_after` once for the whole console (toasts need it anyway) and
keeps the tail in the context; this screen only shows it, so it does no I/O itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from backend.views import EventView
from console.context import ConsoleContext
from console.palette import PaletteCommand
from console.screens.base import LiveScreen
from widgets.event_log import EventTable


class EventsScreen(LiveScreen[list[EventView]]):
    """Stored events, oldest first; following keeps the newest in view."""

    SCREEN_TITLE = "Events"
    MODE = "events"
    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("space", "follow", "Follow"),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self.following = True

    def compose_body(self) -> ComposeResult:
        yield EventTable(id="events")

    async def fetch(self) -> list[EventView]:
        if not self.following and self.data is not None:
            return self.data
        return list(self.ctx.events)

    def draw(self, data: list[EventView]) -> None:
        table = self.query_one(EventTable)
        table.show(data, self.ctx.plain_names(), self.query_text)
        if self.following:
            table.follow()

    def headline(self, data: list[EventView]) -> Text:
        last = data[-1].position if data else 0
        text = Text(f"up to #{last}")
        if self.following:
            text.append(" · following", style="green")
        else:
            newer = sum(1 for e in self.ctx.events if e.position > last)
            text.append(f" · paused · {newer} newer", style="bold yellow")
        return text

    def focus_main(self) -> None:
        self.query_one(EventTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause":
            return self.following
        if action == "follow":
            return not self.following
        return super().check_action(action, parameters)

    def palette_commands(self) -> Iterable[PaletteCommand]:
        if self.following:
            yield PaletteCommand("Pause the event log", "Stop following (space)", self.action_pause)
        else:
            yield PaletteCommand("Follow the event log", "Show new events", self.action_follow)

    def action_pause(self) -> None:
        self.following = False
        self.refresh_bindings()
        self.redraw()

    def action_follow(self) -> None:
        self.following = True
        self.refresh_bindings()
        self.tick()
