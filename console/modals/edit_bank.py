"""`e` on the bank screen: edit name, location, heartbeat interval, compartment mapping
and dialect. Only what changed is sent, through `update_bank` (the service call the CLI's
`bank update` uses); the form is bound to the bank captured when it opened.

Esc in a field leaves it (to the buttons); Esc outside a field cancels. Limits come from
the domain; a field that does not parse is named under the form and nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from backend.domain.bank import MAX_HEARTBEAT_INTERVAL, MAX_LOCATION, MAX_NAME
from backend.domain.dialect import DIALECT_CHOICES
from backend.domain.errors import InvalidInput
from backend.domain.events import CompartmentSpec
from backend.domain.mapping_text import format_mapping, parse_mapping
from backend.views import BankView
from console.fields import whole_number_input
from console.modals.dialog import ButtonDialog, button_row


@dataclass(frozen=True)
class BankEdit:
    """The changes to send (None: unchanged), for the bank `bank_uuid`."""

    bank_uuid: str
    name: str | None = None
    location: str | None = None
    heartbeat_interval_seconds: int | None = None
    dialect: str | None = None
    compartments: list[CompartmentSpec] | None = field(default=None)

    @property
    def empty(self) -> bool:
        return all(
            value is None
            for value in (
                self.name,
                self.location,
                self.heartbeat_interval_seconds,
                self.dialect,
                self.compartments,
            )
        )


def mapping_of(bank: BankView) -> str:
    specs = [
        CompartmentSpec(number=c.number, slave_id=c.slave_id, address=c.address)
        for c in sorted(bank.compartments, key=lambda c: c.number)
    ]
    return format_mapping(specs)


def parse_interval(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidInput("heartbeat interval must be a whole number of seconds") from None
    if not 1 <= value <= MAX_HEARTBEAT_INTERVAL:
        raise InvalidInput(f"heartbeat interval must be 1 to {MAX_HEARTBEAT_INTERVAL} seconds")
    return value


class EditBankModal(ButtonDialog[BankEdit | None]):
    """The bank's settings in a form; Save answers the changes, Cancel/Esc None."""

    FOCUS = "#edit-name"

    BINDINGS = [Binding("escape", "leave", "Leave field / cancel")]

    def __init__(self, bank: BankView) -> None:
        super().__init__()
        self.bank = bank
        self._mapping = mapping_of(bank)

    def compose(self) -> ComposeResult:
        bank = self.bank
        with Vertical(id="dialog"):
            yield Static(Text(f"Edit {bank.name}", style="bold"), id="dialog-title")
            with Horizontal(classes="form-row"):
                yield Label("name", classes="form-label")
                yield Input(bank.name, id="edit-name", max_length=MAX_NAME, compact=True)
            with Horizontal(classes="form-row"):
                yield Label("location", classes="form-label")
                yield Input(
                    bank.location, id="edit-location", max_length=MAX_LOCATION, compact=True
                )
            with Horizontal(classes="form-row"):
                yield Label(f"beat 1-{MAX_HEARTBEAT_INTERVAL}s", classes="form-label")
                yield whole_number_input(
                    str(bank.heartbeat_interval_seconds),
                    id="edit-interval",
                    maximum=MAX_HEARTBEAT_INTERVAL,
                )
                yield Label("dialect", classes="form-label")
                yield Select(
                    [(choice, choice) for choice in DIALECT_CHOICES],
                    value=bank.dialect_setting,
                    allow_blank=False,
                    id="edit-dialect",
                    compact=True,
                )
            with Horizontal(classes="form-row"):
                yield Label("mapping N:SLAVE:ADDR,…", classes="form-label")
            yield Input(self._mapping, id="edit-mapping", compact=True)
            yield Static("", id="edit-error")
            yield button_row(
                Button("Cancel", id="cancel"), Button("Save", id="save", variant="primary")
            )
            hint = "Enter saves · Esc leaves a field, then cancels · a changed mapping or "
            hint += "interval is pushed to the bank at once"
            yield Static(Text(hint, style="dim"), classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_leave(self) -> None:
        if isinstance(self.focused, Input | Select):
            self.query_one("#cancel", Button).focus()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        try:
            edit = self.changes()
        except InvalidInput as exc:
            self.query_one("#edit-error", Static).update(Text(str(exc), style="bold red"))
            return
        self.dismiss(None if edit.empty else edit)

    def changes(self) -> BankEdit:
        """What the form changes (InvalidInput naming a field that does not parse)."""
        bank = self.bank
        name = self.query_one("#edit-name", Input).value.strip()
        location = self.query_one("#edit-location", Input).value.strip()
        interval = parse_interval(self.query_one("#edit-interval", Input).value)
        dialect = str(self.query_one("#edit-dialect", Select).value)
        mapping_text = self.query_one("#edit-mapping", Input).value.strip()
        mapping = None
        if mapping_text != self._mapping:
            mapping = parse_mapping(mapping_text)
            if format_mapping(mapping) == self._mapping:
                mapping = None
        return BankEdit(
            bank_uuid=bank.uuid,
            name=name if name != bank.name else None,
            location=location if location != bank.location else None,
            heartbeat_interval_seconds=(
                interval if interval != bank.heartbeat_interval_seconds else None
            ),
            dialect=dialect if dialect != bank.dialect_setting else None,
            compartments=mapping,
        )
