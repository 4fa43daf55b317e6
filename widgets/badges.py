"""State words with a colour that only repeats what the word already says.

Every state is written out (`online`, `offline`, `open`, `in sync`, ...): colour is a
second channel, never the only one, so the console reads the same in 16 colours,
in monochrome and to a screen reader. Styles use the terminal's named ANSI colours.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from backend.domain.command_status import CommandStatus

# The word shown for each raw state value (only where they differ).
WORDS: dict[str, str] = {
    "in_sync": "in sync",
    "open_compartment": "open",
    "apply_config": "config",
    "update_firmware": "firmware",
}

STYLES: dict[str, str] = {
    # bank status
    "online": "bold green",
    "offline": "bold red",
    "provisioned": "cyan",
    "unprovisioned": "dim",
    "revoked": "magenta",
    # doors
    "open": "bold yellow",
    "closed": "green",
    "jammed": "bold red reverse",
    "unknown": "dim",
    # commands
    CommandStatus.PENDING: "yellow",
    CommandStatus.SENT: "cyan",
    CommandStatus.SUCCESS: "green",
    CommandStatus.ERROR: "bold red",
    CommandStatus.TIMEOUT: "bold red",
    CommandStatus.EXPIRED: "magenta",
    # configuration
    "in_sync": "green",
    "drifted": "bold yellow",
    # connectivity
    "connected": "green",
    "disconnected": "bold red",
    "ok": "green",
    "unreachable": "bold red",
}


def state_word(state: str) -> str:
    """The operator-facing word for a raw state value."""
    return WORDS.get(state, state.replace("_", " "))


def state_text(state: str, *, width: int | None = None) -> Text:
    """The state as a styled word (padded to `width` when given)."""
    word = state_word(state)
    if width is not None:
        word = word.ljust(width)
    return Text(word, style=STYLES.get(state, ""))


class StatusBadge(Static):
    """A single state word, e.g. a bank's status in the bank header."""

    DEFAULT_CSS = """
    StatusBadge { width: auto; }
    """

    state: reactive[str] = reactive("unknown")

    def __init__(self, state: str = "unknown", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def render(self) -> Text:
        return state_text(self.state)
