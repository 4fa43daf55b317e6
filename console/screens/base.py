"""The base of the console's screens: one refresh timer, I/O in workers, a `/` filter,
the status line, a footer, and read-only enforcement for every state-changing action.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static

from backend.domain.errors import DomainError
from backend.http.client_gateway import BackendUnreachable
from console.context import ConsoleContext
from console.palette import PaletteCommand
from console.screens.schedule import RefreshSchedule
from console.screens.tabs import Tab, declare, top_level_screens
from widgets.filter_bar import FilterBar
from widgets.formatting import text_look
from widgets.keyed_table import KeyedTable
from widgets.mode_tabs import ModeTabs
from widgets.status_line import StatusLine, unreachable_text

log = logging.getLogger(__name__)
D = TypeVar("D")
R = TypeVar("R")


class TitleBar(Static):
    """The first line of a screen: where you are and the headline numbers.

    Its size is fixed (one line, the width the tabs leave), so `show` repaints a changed
    title without a layout of the screen, and does nothing when the title is the same.
    """

    DEFAULT_CSS = """
    TitleBar { width: 1fr; height: 1; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Hashable = None
        self._title = Text()

    def show(self, title: Text) -> None:
        look = text_look(title)
        if look == self._shown:
            return
        self._shown = look
        self._title = title
        self.refresh()

    def render(self) -> Text:
        """The title, cut with an ellipsis where the tabs begin."""
        title = self._title.copy()
        title.truncate(max(1, self.content_size.width), overflow="ellipsis")
        return title


class Notice(Static):
    """A line over the screen's body saying why there is nothing (or nothing current) to
    see, and what to do: an empty fleet, a filter that hides every row, a backend that
    does not answer. Hidden while there is nothing to say."""

    DEFAULT_CSS = """
    Notice { height: auto; padding: 0 1; display: none; }
    Notice.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: Hashable = None

    def say(self, text: Text | None) -> None:
        look = None if text is None else text_look(text)
        if look == self._shown:
            return
        self._shown = look
        self.set_class(text is not None, "-shown")
        if text is not None:
            self.update(text)


def is_outage(exc: BaseException) -> bool:
    """Whether a failed call means the backend (or its store) is not answering, rather than
    a refusal of this one request."""
    return isinstance(exc, BackendUnreachable) or not isinstance(exc, DomainError)


APP_ACTIONS = frozenset({"open_selected"})
"""Write actions an `app` API token may take (DESIGN: app tokens read and open doors)."""


class LiveScreen(Screen[None], Generic[D]):
    """A screen that refreshes its data in a worker every `refresh_interval` seconds.

    Subclasses implement `fetch` (awaits the gateway, runs in a worker), `draw` (puts the
    last data on the widgets; no I/O) and `headline`. Actions named in `WRITE_ACTIONS`
    change the fleet: in read-only mode they are hidden, unbound and refused.
    """

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("slash", "filter", "Filter"),
    ]
    WRITE_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    SELECTION_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    """Actions that need a highlighted row: hidden from the footer while there is none."""
    SCREEN_TITLE: ClassVar[str] = ""
    TAB: ClassVar[Tab | None] = None
    """Set on a top-level screen: its one declaration as a tab (`console/screens/tabs.py`);
    its title and `MODE` follow from it."""
    MODE: ClassVar[str] = ""
    """The tab this screen belongs to (a top-level screen's own; a pushed screen names the
    tab it was opened from)."""
    SCREEN_TITLE_SHOWN: ClassVar[bool] = False
    """Whether the title bar names the screen (the tabs already name the top-level ones)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("TAB")
        if tab is not None:
            cls.MODE = tab.name
            cls.SCREEN_TITLE = cls.SCREEN_TITLE or tab.label
            declare(tab, cls)

    def __init__(self, ctx: ConsoleContext, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.ctx = ctx
        self.query_text = ""
        self.data: D | None = None
        self.refreshes = 0
        """How many refreshes have been drawn (tests wait on it)."""
        self.schedule = RefreshSchedule(period=max(1.0, ctx.refresh_interval))
        self._drawn_second = -1
        self._loading = False
        self._failing = False
        self._fetched_at: datetime | None = None
        self._outage_shown = False

    # ----- composition -------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="title-bar"):
            yield TitleBar(id="title")
            tabs = [(tab.key, tab.name, tab.tab_label) for tab, _ in top_level_screens()]
            yield ModeTabs(tabs, self.MODE)
        yield Notice(id="notice")
        yield from self.compose_body()
        yield FilterBar(id="filter")
        yield StatusLine(id="status-line")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the title and the status line."""
        yield from ()

    def on_mount(self) -> None:
        self.set_interval(self.ctx.refresh_interval, self.tick)
        self.tick(force=True)

    def on_screen_resume(self) -> None:
        self.query_one(ModeTabs).refresh(layout=True)
        self.tick(force=True)

    def on_resize(self) -> None:
        self.query_one(ModeTabs).refresh(layout=True)

    # ----- refresh -----------------------------------------------------------------------

    @property
    def loading(self) -> bool:  # type: ignore[override]  # read-only here: the fetch sets it
        """True while a fetch is in flight."""
        return self._loading

    @property
    def shown(self) -> bool:
        """True while the screen is in the current stack (on top or under a modal)."""
        return self in self.app.screen_stack

    def tick(self, force: bool = False) -> None:
        """Timer callback: redraw what moves with the clock; start a fetch when one is due.

        `force` fetches as soon as the duty limit allows (after an action, on resume).
        """
        now = self.ctx.clock.now()
        self.query_one(StatusLine).show(self.ctx.connectivity, now)
        if not self.shown:
            return
        self.show_outage()
        if self.data is not None and int(now.timestamp()) != self._drawn_second:
            self.redraw()  # ages ("3s ago") move with the clock, no I/O needed
        position = self.ctx.position
        if self._loading or not self.schedule.due(position, force=force):
            return
        self._loading = True
        self.schedule.started(position)
        self.refresh_data()

    @work(exclusive=True, group="refresh", exit_on_error=False)
    async def refresh_data(self) -> None:
        """Fetch (awaiting the gateway) and draw; a failure marks the data as stale."""
        try:
            data = await self.fetch()
        except Exception as exc:
            self._refresh_failed(exc)
        else:
            self.data = data
            self._failing = False
            self._fetched_at = self.ctx.clock.now()
            self.show_outage()
            self.redraw()
            self.refreshes += 1
        finally:
            self.schedule.finished()
            self._loading = False

    def _refresh_failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("refresh of %s failed: %s", type(self).__name__, exc)
            self.notify(
                f"Could not refresh: {exc}", title="Stale data", severity="warning", markup=False
            )
        self._failing = True
        if is_outage(exc):
            self.ctx.backend_failed()
        self.show_outage()
        failing = Text(f"{self.SCREEN_TITLE} · refresh failing: {exc}", "bold red", no_wrap=True)
        self.query_one(TitleBar).show(failing)

    # ----- outage and empty states -------------------------------------------------------

    def show_outage(self) -> None:
        """While the backend does not answer, say so above the data (and how old it is),
        and let the widgets that have nothing say it instead of "none"."""
        since = self.ctx.unreachable_since
        if since is None:
            if self._outage_shown:
                self._outage_shown = False
                self.query_one(Notice).say(None)
                self.redraw()
            return
        self._outage_shown = True
        text = Text(unreachable_text(self.ctx.run_mode, since), style="bold red")
        if self.data is not None and self._fetched_at is not None:
            text.append(f" · what you see is from {self._fetched_at.strftime('%H:%M:%S UTC')}")
        else:
            text.append(" · nothing to show until it answers")
        self.query_one(Notice).say(text)
        self.show_unreachable(unreachable_text(self.ctx.run_mode, since))

    def show_unreachable(self, words: str) -> None:
        """Put `words` where the screen would show data it never got (override)."""

    def say(self, text: Text | None) -> None:
        """An empty state (what to do), or None; an outage notice wins over it."""
        if self.ctx.unreachable_since is None:
            self.query_one(Notice).say(text)

    def empty_text(self, what: str, hint: str) -> Text:
        """`No banks match "x" · Escape in the filter clears it`, or `what` and its hint."""
        if self.query_text:
            text = Text("Nothing matches ", style="bold")
            text.append(f"{self.query_text!r}", style="bold cyan")
            text.append(" · / then Escape clears the filter")
            return text
        text = Text(what, style="bold")
        text.append(f" · {hint}")
        return text

    async def fetch(self) -> D:
        """Load this screen's data through the gateway (runs in a worker)."""
        raise NotImplementedError

    def redraw(self) -> None:
        """Put the last fetched data (filtered) on the widgets, and the headline in the title."""
        if self.data is None:
            return
        self._drawn_second = int(self.ctx.clock.now().timestamp())
        selected = self.has_selection()
        self.draw(self.data)
        if self.has_selection() != selected:
            self.refresh_bindings()
        title = Text(no_wrap=True, overflow="ellipsis")
        if self.SCREEN_TITLE_SHOWN:
            title.append(f"{self.SCREEN_TITLE} · ", style="bold")
        title.append_text(self.headline(self.data))
        if self.query_text:
            title.append(f" · filter: {self.query_text}", style="cyan")
        if self.ctx.readonly:
            title.append(" · read-only", style="bold cyan")
        self.query_one(TitleBar).show(title)

    def draw(self, data: D) -> None:
        """Show `data` on the screen's widgets."""

    def headline(self, data: D) -> Text:
        """Numbers for the title bar (counts by state)."""
        return Text("")

    # ----- filter ------------------------------------------------------------------------

    def action_filter(self) -> None:
        """Open the filter bar (it keeps the last filter of this screen)."""
        self.query_one(FilterBar).open()

    def on_filter_bar_updated(self, event: FilterBar.Updated) -> None:
        self.query_text = event.query.strip()
        self.redraw()

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        self.focus_main()

    def focus_main(self) -> None:
        """Give focus back to the screen's main widget."""
        self.focus_next()

    # ----- actions and read-only ---------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WRITE_ACTIONS and self.ctx.readonly:
            return False
        if action in self.WRITE_ACTIONS and self.ctx.role == "app" and action not in APP_ACTIONS:
            return False  # not offered: the backend would refuse it for this token's role
        return not (action in self.SELECTION_ACTIONS and not self.has_selection())

    def has_selection(self) -> bool:
        """Whether a row (bank, transaction) is highlighted for the selection actions."""
        return True

    def cursor_of(self, table: type[KeyedTable]) -> str | None:
        """The key under the cursor of this screen's `table` (None before it is composed)."""
        try:
            return self.query_one(table).cursor_key
        except NoMatches:
            return None

    def may_act(self) -> bool:
        """False (and nothing happens) in read-only mode."""
        return not self.ctx.readonly

    def palette_commands(self) -> Iterable[PaletteCommand]:
        """This screen's palette commands (actions marked `changes_state`)."""
        return ()

    def submit(
        self,
        label: str,
        call: Callable[[], Awaitable[R]],
        done: Callable[[R], None] | None = None,
    ) -> None:
        """Run a state-changing gateway call in a worker; refusals become error toasts."""
        if not self.may_act():
            return
        self._submit(label, call, done)

    @work(group="command", exit_on_error=False)
    async def _submit(
        self,
        label: str,
        call: Callable[[], Awaitable[R]],
        done: Callable[[R], None] | None,
    ) -> None:
        # Not exclusive: a second command must never cancel one already on its way.
        try:
            result = await call()
        except DomainError as exc:
            self.notify(str(exc), title=f"{label} refused", severity="error", markup=False)
            return
        except Exception as exc:
            log.exception("%s failed", label)
            self.notify(f"{exc}", title=f"{label} failed", severity="error", markup=False)
            return
        if done is not None:
            done(result)
        self.tick(force=True)
