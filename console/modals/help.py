"""`?`: the keys that apply on the screen underneath, and what the state words mean."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.domain.command_status import CommandStatus
from backend.search import SYNTAX_HELP
from widgets.badges import state_text

LEGEND: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bank", ("online", "offline", "provisioned", "unprovisioned", "revoked")),
    ("door", ("open", "closed", "jammed", "unknown")),
    (
        "command",
        (
            CommandStatus.PENDING,
            CommandStatus.SENT,
            CommandStatus.SUCCESS,
            CommandStatus.ERROR,
            CommandStatus.TIMEOUT,
            CommandStatus.EXPIRED,
        ),
    ),
    ("config", ("in_sync", "drifted", "pending", "unknown")),
)


def legend_text() -> Text:
    """One line per kind of state, every word in its colour."""
    lines = []
    for kind, states in LEGEND:
        line = Text(f"{kind:<9}")
        for i, state in enumerate(states):
            if i:
                line.append(" · ")
            line.append_text(state_text(state))
        lines.append(line)
    return Text("\n").join(lines)


class HelpModal(ModalScreen[None]):
    """Keys of the current screen (only those that apply) and the state legend."""

    BINDINGS = [
        Binding("escape", "dismiss_help", "Close"),
        Binding("question_mark", "dismiss_help", "Close"),
        Binding("q", "dismiss_help", "Close"),
    ]

    def __init__(self, title: str, keys: Sequence[tuple[str, str]], readonly: bool) -> None:
        super().__init__()
        self._title = title
        self._keys = list(keys)
        self._readonly = readonly

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(Text(f"Help · {self._title}", style="bold"), id="dialog-title")
            if self._readonly:
                note = "Read-only console: nothing here can change the fleet."
                yield Static(Text(note, style="cyan"), classes="line")
            keys = Text()
            for i, (key, description) in enumerate(self._keys):
                if i:
                    keys.append("\n")
                keys.append(f"{key:>8}  ", style="bold")
                keys.append(description)
            yield Static(keys, classes="line")
            filters = Text("filter (/)  ", style="bold")
            filters.append(SYNTAX_HELP)
            yield Static(filters, classes="line")
            yield Static(legend_text(), classes="line legend")
            hint = Text("Esc / ? close · ctrl+p command palette", style="dim")
            yield Static(hint, classes="hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
