"""The status line: broker and database connectivity in words, mode, operator, time."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from widgets.badges import state_text
from widgets.formatting import text_look, truncate


@dataclass(frozen=True)
class Connectivity:
    """What the status line shows; plain data (the app fills it from `status()`)."""

    broker_connected: bool | None  # None: not known yet
    database_ok: bool | None
    broker_detail: str = ""
    mode: str = "standalone"
    operator: str = ""
    readonly: bool = False
    stale: bool = False  # the last refresh failed; what is shown may be old


def status_text(state: Connectivity, now: datetime, width: int = 80) -> Text:
    """`broker connected · database ok · standalone · alice · 12:00:03 UTC`."""
    text = Text("broker ")
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
    text.append(f" · {state.mode}")
    if state.readonly:
        text.append(" · read-only", style="bold cyan")
    if state.operator:
        text.append(f" · {truncate(state.operator, 12)}")
    clock = now.strftime("%H:%M:%S UTC")
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
