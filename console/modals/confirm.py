"""Confirmation before anything that acts on a real locker or voids a credential.

The modal captures what it will act on when it opens (`payload`) and returns exactly
that on confirmation, whatever the cursor underneath has done since. `y` confirms;
Enter, `n` and Escape on the default (Cancel) button do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Button, Static

from backend.views import BankView
from console.modals.dialog import ButtonDialog, button_row

T = TypeVar("T")


@dataclass(frozen=True)
class OpenRequest:
    """Open compartment `number` of the bank `bank_uuid` (named for the confirmation)."""

    bank_uuid: str
    bank_name: str
    location: str
    number: int
    status: str = "online"
    """The bank's status when the operator asked (a bank not online gets a warning)."""
    ttl_seconds: float = 30.0
    """How long the open may wait for the bank before it expires (OPEN_TTL)."""


@dataclass(frozen=True)
class BankRequest:
    """An action on a whole bank (new token, revoke, config push)."""

    bank_uuid: str
    bank_name: str
    location: str

    @classmethod
    def of(cls, bank: BankView) -> BankRequest:
        return cls(bank.uuid, bank.name, bank.location)


class ConfirmModal(ButtonDialog[T | None], Generic[T]):
    """Ask before acting; dismisses with the captured payload, or None when cancelled."""

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self, payload: T, *, title: str, lines: Sequence[str | Text], confirm: str
    ) -> None:
        super().__init__()
        self.payload = payload
        self._title = title
        self._lines = list(lines)
        self._confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self._title, style="bold"), id="dialog-title")
            for line in self._lines:
                yield Static(line if isinstance(line, Text) else Text(line), classes="line")
            yield Static(
                Text(f"y {self._confirm.lower()} · n / Esc cancel", style="dim"), classes="hint"
            )
            yield button_row(
                Button(self._confirm, id="confirm", variant="warning"),
                Button("Cancel", id="cancel", variant="default"),
            )

    def action_confirm(self) -> None:
        self.dismiss(self.payload)

    def action_cancel(self) -> None:
        self.dismiss(None)


def confirm_open(request: OpenRequest) -> ConfirmModal[OpenRequest]:
    """The confirmation naming bank, location and compartment."""
    where = Text("Bank      ")
    where.append(request.bank_name, style="bold")
    place = Text("Location  ")
    place.append(request.location or "—", style="bold")
    door = Text("Door      ")
    door.append(f"compartment {request.number}", style="bold yellow")
    lines: list[str | Text] = [
        where,
        place,
        door,
        Text(f"uuid      {request.bank_uuid}", style="dim"),
    ]
    if request.status != "online":
        lines.append(
            Text(
                f"The bank is {request.status}: the open waits up to {request.ttl_seconds:g} s "
                "for it, then expires and never opens later.",
                style="bold red",
            )
        )
    return ConfirmModal(
        request,
        title=f"Open compartment {request.number}?",
        lines=lines,
        confirm="Open",
    )


def confirm_quit(connected: int) -> ConfirmModal[bool]:
    """Standalone: quitting stops the backend services this console runs for the fleet."""
    banks = "1 bank is" if connected == 1 else f"{connected} banks are"
    return ConfirmModal(
        True,
        title="Quit and stop the services?",
        lines=[
            Text(f"{banks} connected through this console.", style="bold"),
            "Quitting stops its backend services (MQTT runtime, HTTP API, auth hook and the",
            "embedded broker if it runs one) for the whole fleet until it is started again.",
        ],
        confirm="Quit",
    )


def confirm_bank(
    request: BankRequest, *, title: str, consequence: str, confirm: str
) -> ConfirmModal[BankRequest]:
    """A confirmation for an action on a whole bank."""
    where = Text("Bank      ")
    where.append(request.bank_name, style="bold")
    place = Text("Location  ")
    place.append(request.location or "—", style="bold")
    return ConfirmModal(
        request,
        title=title,
        lines=[where, place, Text(f"uuid      {request.bank_uuid}", style="dim"), consequence],
        confirm=confirm,
    )
