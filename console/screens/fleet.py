"""Fleet: one row per bank, the truth about the whole fleet at a glance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from backend.views import BankView, EventView
from console.attention import Troubles, by_attention
from console.context import ConsoleContext
from console.modals.confirm import BankRequest
from console.palette import PaletteCommand
from console.screens.actions import BankActionScreen
from console.screens.tabs import Tab
from widgets.badges import state_text
from widgets.bank_table import BankTable


def fleet_headline(banks: list[BankView]) -> Text:
    """`3 banks: 2 online · 1 offline · 2 pending`."""
    counts = Counter(bank.status for bank in banks)
    text = Text(f"{len(banks)} bank{'' if len(banks) == 1 else 's'}")
    separator = ": "
    for status in ("online", "offline", "provisioned", "unprovisioned", "revoked"):
        if counts.get(status):
            text.append(f"{separator}{counts[status]} ")
            text.append_text(state_text(status))
            separator = " · "
    pending = sum(bank.pending_commands for bank in banks)
    if pending:
        text.append(f" · {pending} pending", style="yellow")
    return text


class FleetScreen(BankActionScreen[list[BankView]]):
    """Every bank: status, heartbeat age and pulse, open doors, config, pending commands."""

    TAB = Tab("1", "fleet", "Fleet")
    BINDINGS = [
        Binding("p", "push_config", "Push config"),
        Binding("n", "new_bank", "New bank"),
    ]
    WRITE_ACTIONS = frozenset({"push_config", "new_bank"})
    SELECTION_ACTIONS = frozenset({"push_config"})

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self._troubles = Troubles()
        self._ordered: tuple[list[BankView], list[BankView]] | None = None

    def compose_body(self) -> ComposeResult:
        yield BankTable(id="banks")

    async def fetch(self) -> list[BankView]:
        banks = await self.ctx.gateway.list_banks()
        self.ctx.remember_banks(banks)
        return banks

    def draw(self, data: list[BankView]) -> None:
        now = self.ctx.clock.now()
        pulses = self.ctx.heartbeats.pulses(now)
        if self._troubles.position < self.ctx.position and self._troubles.feed(self._new_events()):
            self._ordered = None
        if self._ordered is None or self._ordered[0] is not data:
            self._ordered = (data, by_attention(data, self._troubles))
        ordered = self._ordered[1]
        table = self.query_one(BankTable)
        table.show(ordered, now, pulses, self.query_text)
        if table.row_count:
            self.say(None)
        elif data:
            self.say(self.empty_text("", ""))
        else:
            hint = (
                "the fleet is empty"
                if self.ctx.readonly
                else "press n to create one, or run `locker-console --demo` for a simulated fleet"
            )
            self.say(self.empty_text("No banks yet", hint))

    def _new_events(self) -> list[EventView]:
        """The events of the tail the troubles have not seen (newest at the end)."""
        seen, new = self._troubles.position, []
        for event in reversed(self.ctx.events):
            if event.position <= seen:
                break
            new.append(event)
        new.reverse()
        return new

    def headline(self, data: list[BankView]) -> Text:
        text = fleet_headline(data)
        text.append(f" · by {self.query_one(BankTable).sort_label}", style="dim")
        return text

    def on_keyed_table_sort_changed(self, event: BankTable.SortChanged) -> None:
        self.redraw()

    async def action_new_bank(self) -> None:
        """The provisioning form, focused on the name."""
        if self.may_act():
            await self.app.run_action("create_bank")

    def focus_main(self) -> None:
        self.query_one(BankTable).focus()

    @property
    def highlighted(self) -> BankView | None:
        """The bank under the cursor (from the last refresh)."""
        key = self.query_one(BankTable).cursor_key
        return next((b for b in self.data or [] if b.uuid == key), None)

    def has_selection(self) -> bool:
        return self.cursor_of(BankTable) is not None

    def on_bank_table_bank_chosen(self, event: BankTable.BankChosen) -> None:
        self.view_bank(event.bank_uuid)

    def action_push_config(self) -> None:
        bank = self.highlighted
        if bank is not None:
            self.push_config(BankRequest.of(bank))

    def palette_commands(self) -> Iterable[PaletteCommand]:
        bank = self.highlighted
        if bank is None:
            return
        yield PaletteCommand(
            f"View bank: {bank.name}",
            "Compartments, config and recent transactions",
            lambda: self.view_bank(bank.uuid),
        )
        yield from self.bank_commands(bank, discover=True)
