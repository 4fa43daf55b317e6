"""The status line: broker and database connectivity in words, run mode, operator, time."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from backend.run_mode import RunMode
from widgets.badges import state_text
from widgets.formatting import text_look, truncate


@dataclass(frozen=True)
class Connectivity:
    """What the status line shows; plain data (the app fills it from `status()`)."""

    broker_connected: bool | None  # None: not known yet
    database_ok: bool | None
    broker_detail: str = ""
    run_mode: str = RunMode.STANDALONE
    operator: str = ""
    readonly: bool = False
    stale: bool = False  # the last refresh failed; what is shown may be old
    unreachable_since: datetime | None = None  # the backend has not answered since then
    alerts: int | None = None  # open (unacknowledged) alerts; None: not known


def unreachable_text(run_mode: str, since: datetime) -> str:
    """`backend unreachable since 12:00:03 UTC` (the store, when it runs in-process)."""
    what = "backend" if run_mode == RunMode.ATTACH else "store"
    return f"{what} unreachable since {since.strftime('%H:%M:%S UTC')}"


def status_text(state: Connectivity, now: datetime, width: int = 80) -> Text:
    """`broker connected · database ok · standalone · alice · 12:00:03 UTC`."""
    text = Text()
    if state.unreachable_since is not None:
        # Nothing the backend said before is current: no broker or database words at all.
        text.append(unreachable_text(state.run_mode, state.unreachable_since), style="bold red")
        return _tail(text, state, now, width)
    text.append("broker ")
    if state.broker_connected is None:
        text.append("checking…", style="dim")
    else:
        text.append_text(state_text("connected" if state.broker_connected else "disconnected"))
        if not state.broker_connected and state.broker_detail:
            text.append(f" ({truncate(state.broker_detail, 24)})", style="red")
    text.append(" · database ")
    if state.database_ok is None:
        text.append("checking…", style="dim")
    else:
        text.append_text(state_text("ok" if state.database_ok else "unreachable"))
    if state.stale:
        text.append(" · data may be stale", style="bold yellow")
    return _tail(text, state, now, width)


def _tail(text: Text, state: Connectivity, now: datetime, width: int) -> Text:
    if state.alerts:
        text.append(f" · {state.alerts} alert{'' if state.alerts == 1 else 's'} (5)", "bold red")
    text.append(f" · {state.run_mode}")
    if state.readonly:
        text.append(" · read-only", style="bold cyan")
    if state.operator:
        text.append(f" · {truncate(state.operator, 12)}")
    clock = now.strftime("%H:%M:%S UTC")
    if text.cell_len + len(clock) + 1 > width:
        clock = now.strftime("%H:%M:%S")  # narrow: the time still whole
    pad = width - text.cell_len - len(clock) - 1
    text.append(" " * max(1, pad) + clock)
    return text


class StatusLine(Static):
    """One line at the bottom of every screen (above the footer).

    Its size never depends on its text (one line, the screen's width), so a change is
    repainted without a layout of the screen, and an unchanged text (the screens call
    `show` four times a second, the clock moves once) is not repainted at all.
    """

    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Hashable = None

    def show(self, state: Connectivity, now: datetime) -> None:
        """Render `state` as of `now`."""
        text = status_text(state, now, max(20, self.content_size.width))
        look = text_look(text)
        if look == self._shown:
            return
        self._shown = look
        self.update(text, layout=False)
