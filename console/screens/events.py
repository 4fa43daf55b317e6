"""Events: the live log of stored events by position; filterable; pause and follow;
`enter` shows one event whole.

The app polls `events_after` once for the whole console (toasts need it anyway) and
keeps the tail in the context. With a filter, the screen also asks the backend for the
newest matching events of the whole stored history (`search_events`: in attach mode the
server filters, the `q` of the events API); what is visible is filtered here, at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from backend.views import EventView
from console.context import ConsoleContext
from console.modals.event_detail import EventDetailModal
from console.palette import PaletteCommand
from console.screens.base import LiveScreen
from console.screens.tabs import Tab
from widgets.event_log import EventTable
from widgets.filter_bar import FilterBar

SEARCH_LIMIT = 500


class EventsScreen(LiveScreen[list[EventView]]):
    """Stored events, oldest first; following keeps the newest in view."""

    TAB = Tab("3", "events", "Events")
    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("space", "follow", "Follow"),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self.following = True
        self._searched = ""
        self._submitted = ""
        self._found: list[EventView] = []

    def compose_body(self) -> ComposeResult:
        yield EventTable(id="events")

    async def fetch(self) -> list[EventView]:
        query = self._submitted
        if not self.following and self.data is not None and self._searched == query:
            return self.data
        tail = list(self.ctx.events)
        if not query:
            self._searched = ""
            return tail
        if self._searched != query:  # the store is searched once per filter; the tail is live
            self._found = await self.ctx.gateway.search_events(query, SEARCH_LIMIT)
            self._searched = query
        merged = {event.position: event for event in self._found}
        merged.update((event.position, event) for event in tail)
        return sorted(merged.values(), key=lambda event: event.position)

    def draw(self, data: list[EventView]) -> None:
        table = self.query_one(EventTable)
        table.show(data, self.ctx.plain_names(), self.query_text)
        if self.following:
            table.follow()
        if table.row_count:
            self.say(None)
        elif data or self.query_text:
            self.say(self.empty_text("", ""))
        else:
            self.say(self.empty_text("No events yet", "they appear here as the fleet works"))

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        """Enter in the filter: also ask the backend for the history beyond the tail (each
        keystroke filters what is here; only a finished filter searches the store)."""
        super().on_filter_bar_done(event)
        self._submitted = event.query.strip()
        self.tick(force=True)

    def on_event_table_chosen(self, event: EventTable.Chosen) -> None:
        chosen = next((e for e in self.data or [] if e.position == event.position), None)
        if chosen is not None:
            self.app.push_screen(EventDetailModal(chosen, self.ctx.name_of(chosen.aggregate_uuid)))

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
