"""`enter` on an event: the whole stored event — type, bank, who, when, and its payload
and metadata as JSON — scrollable, copyable (OSC 52)."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.views import EventView
from widgets.formatting import stamp


def event_json(event: EventView) -> str:
    """The event as the API returns it, indented."""
    return json.dumps(event.to_json(), indent=2, sort_keys=True, ensure_ascii=False)


def event_heading(event: EventView, bank_name: str) -> Text:
    text = Text(f"#{event.position} {event.event_type}", style="bold")
    text.append(f"\n{bank_name} · {event.aggregate_uuid} · version {event.aggregate_version}")
    actor = event.metadata.get("actor")
    text.append(f"\n{stamp(event.created_at)}" + (f" · by {actor}" if actor else ""))
    return text


class EventDetailModal(ModalScreen[None]):
    """One event in full."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("c", "copy", "Copy JSON"),
    ]

    def __init__(self, event: EventView, bank_name: str) -> None:
        super().__init__()
        self.event = event
        self._bank_name = bank_name

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(event_heading(self.event, self._bank_name), id="dialog-title")
            # Text, not markup: payload strings from devices are shown literally.
            yield Static(Text(event_json(self.event)), id="event-json")
            yield Static(Text("c copy JSON (OSC 52) · Esc close", style="dim"), classes="hint")

    def on_mount(self) -> None:
        self.query_one("#dialog", VerticalScroll).focus()

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(event_json(self.event))
        self.notify("Event JSON copied to the clipboard (OSC 52).", title="Copied")

    def action_close(self) -> None:
        self.dismiss(None)
