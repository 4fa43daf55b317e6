"""Provisioning: create a bank (its token is shown once), issue a new token, revoke.

In read-only mode the form is not there at all and the bank list is only a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from backend.domain.bank import MAX_COMPARTMENTS, MAX_HEARTBEAT_INTERVAL, MAX_LOCATION, MAX_NAME
from backend.domain.errors import InvalidInput
from backend.views import BankView, CreatedBank
from console.context import ConsoleContext
from console.fields import whole_number_input
from console.modals.confirm import BankRequest
from console.modals.token import TokenModal
from console.palette import PaletteCommand
from console.screens.actions import BankActionScreen
from console.screens.tabs import Tab
from widgets.badges import state_text
from widgets.filter_bar import FilterBar
from widgets.formatting import age, plural, short_id, truncate
from widgets.keyed_table import KeyedTable, Row, filter_rows, natural_key


def token_state(bank: BankView, now: datetime) -> Text:
    """Whether the bank has a usable provisioning token, in words."""
    if bank.token_expires_at is None:
        if bank.provisioned_at is not None:
            return Text(f"used {age(bank.provisioned_at, now)}")
        return Text("none", style="dim")
    left = (bank.token_expires_at - now).total_seconds()
    if left <= 0:
        return Text("expired", style="bold red")
    days, hours = int(left // 86_400), int(left % 86_400 // 3600)
    return Text(f"valid {days}d {hours}h" if days else f"valid {hours}h", style="green")


def provisioning_row(bank: BankView, now: datetime) -> Row:
    token = token_state(bank, now)
    return Row(
        bank.uuid,
        (
            Text(truncate(bank.name, 200)),
            Text(truncate(bank.location, 200)),
            state_text(bank.status),
            token,
            Text(short_id(bank.uuid), style="dim"),
        ),
        {
            "name": bank.name,
            "location": bank.location,
            "bank": f"{bank.name} {bank.location} {bank.uuid}",
            "status": bank.status,
            "token": token.plain,
            "uuid": bank.uuid,
        },
        {"name": natural_key(bank.name), "location": natural_key(bank.location)},
    )


class ProvisioningTable(KeyedTable):
    """Banks with their credential state, keyed by uuid."""

    FLEX_MIN = 8
    FLEX_WEIGHTS: ClassVar[dict[str, int]] = {"name": 2, "location": 1}
    COLUMNS = (
        ("name", "name", None),
        ("location", "location", None),
        ("status", "status", 13),
        ("token", "token", 14),
        ("uuid", "uuid", 8),
    )

    def show(self, banks: Sequence[BankView], now: datetime, query: str = "") -> None:
        """Show `banks` (display order) filtered by `query`."""
        self.sync(filter_rows([provisioning_row(b, now) for b in banks], query))


def parse_count(text: str, what: str, low: int, high: int) -> int:
    """A whole number in [low, high] from a form field, or InvalidInput naming the field."""
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}")
    return value


class ProvisioningScreen(BankActionScreen[list[BankView]]):
    """New banks and their credentials."""

    TAB = Tab("4", "provisioning", "Provisioning", short="Prov")
    BINDINGS = [
        Binding("n", "new_bank", "New bank"),
        Binding("t", "new_token", "New token"),
        Binding("r", "revoke", "Revoke"),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]
    WRITE_ACTIONS = frozenset({"new_bank", "new_token", "revoke", "create"})
    SELECTION_ACTIONS = frozenset({"new_token", "revoke"})

    def compose_body(self) -> ComposeResult:
        if self.ctx.may_administer:
            with Vertical(id="create-form"):
                with Horizontal(classes="form-row"):
                    yield Label("name", classes="form-label")
                    yield Input(
                        placeholder="Main hall", id="new-name", compact=True, max_length=MAX_NAME
                    )
                    yield Label("location", classes="form-label")
                    yield Input(
                        placeholder="Berlin",
                        id="new-location",
                        compact=True,
                        max_length=MAX_LOCATION,
                    )
                with Horizontal(classes="form-row"):
                    yield Label(f"doors 1-{MAX_COMPARTMENTS}", classes="form-label")
                    yield whole_number_input("12", id="new-doors", maximum=MAX_COMPARTMENTS)
                    yield Label(f"beat 1-{MAX_HEARTBEAT_INTERVAL}s", classes="form-label")
                    yield whole_number_input(
                        "30", id="new-interval", maximum=MAX_HEARTBEAT_INTERVAL
                    )
                    yield Button("Create bank", id="create", compact=True, variant="primary")
        yield ProvisioningTable(id="provisioning")

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self._select_when_shown: str | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(ProvisioningTable).focus()

    async def fetch(self) -> list[BankView]:
        banks = await self.ctx.gateway.list_banks()
        self.ctx.remember_banks(banks)
        return banks

    def draw(self, data: list[BankView]) -> None:
        table = self.query_one(ProvisioningTable)
        table.show(data, self.ctx.clock.now(), self.query_text)
        if self._select_when_shown and table.move_to_key(self._select_when_shown):
            self._select_when_shown = None  # the new bank, under the cursor
        if table.row_count:
            self.say(None)
        elif self.ctx.readonly:
            self.say(self.empty_text("No banks yet", "an operator creates them here"))
        else:
            hint = "fill in the form above (n) and press Enter; its token is shown once"
            self.say(self.empty_text("No banks yet", hint))

    def headline(self, data: list[BankView]) -> Text:
        waiting = sum(1 for b in data if b.status == "unprovisioned")
        return Text(f"{plural(len(data), 'bank')} · {waiting} waiting for their device")

    def focus_main(self) -> None:
        self.query_one(ProvisioningTable).focus()

    def has_selection(self) -> bool:
        return self.cursor_of(ProvisioningTable) is not None

    @property
    def highlighted(self) -> BankRequest | None:
        key = self.query_one(ProvisioningTable).cursor_key
        bank = next((b for b in self.data or [] if b.uuid == key), None)
        return BankRequest.of(bank) if bank else None

    # ----- create ------------------------------------------------------------------------

    def action_new_bank(self) -> None:
        self.query_one("#new-name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id and event.input.id.startswith("new-"):
            event.stop()
            self.action_create()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create":
            event.stop()
            self.action_create()

    def action_create(self) -> None:
        """Create the bank described by the form; its token is shown once."""
        if not self.may_act():
            return
        name = self.query_one("#new-name", Input).value
        location = self.query_one("#new-location", Input).value
        try:
            doors = parse_count(
                self.query_one("#new-doors", Input).value, "doors", 1, MAX_COMPARTMENTS
            )
            interval = parse_count(
                self.query_one("#new-interval", Input).value,
                "heartbeat interval",
                1,
                MAX_HEARTBEAT_INTERVAL,
            )
        except InvalidInput as exc:
            self.notify(str(exc), title="Create bank refused", severity="error", markup=False)
            return
        gateway = self.ctx.gateway
        self.submit(
            "Create bank",
            lambda: gateway.create_bank(name, location, doors, interval),
            self._created,
        )

    def _created(self, created: CreatedBank) -> None:
        self.query_one("#new-name", Input).value = ""
        self.query_one("#new-location", Input).value = ""
        table = self.query_one(ProvisioningTable)
        table.focus()  # the keys after this act on the table, never type into the form
        self._select_when_shown = created.uuid
        self.app.push_screen(
            TokenModal(
                bank_uuid=created.uuid,
                bank_name=created.name,
                token=created.token,
                expires_at=created.token_expires_at,
                reissued=False,
            )
        )

    def action_leave_field(self) -> None:
        """Escape in the form: back to the bank list (what was typed stays)."""
        if isinstance(self.focused, Input) and not isinstance(self.focused, FilterBar):
            self.query_one(ProvisioningTable).focus()

    # ----- credentials -------------------------------------------------------------------

    def action_new_token(self) -> None:
        if (request := self.highlighted) is not None:
            self.ask_new_token(request)

    def action_revoke(self) -> None:
        if (request := self.highlighted) is not None:
            self.ask_revoke(request)

    def palette_commands(self) -> Iterable[PaletteCommand]:
        yield PaletteCommand(
            "Create bank",
            "Fill in the form (name, location, doors, heartbeat)",
            self.action_new_bank,
            changes_state=True,
        )
