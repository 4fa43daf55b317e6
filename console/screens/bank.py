"""Bank: one bank's doors (grid), liveness, configuration and recent transactions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from backend.views import BankView, TransactionView
from console.context import ConsoleContext
from console.modals.confirm import BankRequest, OpenRequest
from console.palette import PaletteCommand
from console.screens.actions import BankActionScreen
from widgets.badges import state_text
from widgets.compartment_grid import CompartmentGrid
from widgets.formatting import age, clock_time, duration, short_id
from widgets.sparkline import HeartbeatSparkline
from widgets.transaction_timeline import TransactionTable

RECENT = 50


@dataclass(frozen=True)
class BankData:
    """What the bank screen shows."""

    bank: BankView
    transactions: list[TransactionView]


def status_line(bank: BankView) -> Text:
    text = Text("status ")
    text.append_text(state_text(bank.status))
    if bank.status_changed_at is not None:
        text.append(f" since {clock_time(bank.status_changed_at)}")
    text.append(f" · uuid {bank.uuid}", style="dim")
    return text


def liveness_line(bank: BankView, now_text: str) -> Text:
    text = Text(f"heartbeat {now_text} · every {bank.heartbeat_interval_seconds}s")
    if bank.uptime_seconds is not None:
        text.append(f" · uptime {duration(bank.uptime_seconds)}")
    text.append("  ")
    return text


def config_line(bank: BankView) -> Text:
    text = Text("config ")
    text.append_text(state_text(bank.config_state))
    text.append(f" · desired {bank.desired_config_hash[:8]}")
    text.append(f" · applied {(bank.applied_config_hash or '—')[:8]}")
    pending = bank.pending_commands
    text.append(f" · {pending} pending", style="yellow" if pending else "")
    auto = " (auto)" if bank.dialect_setting == "auto" and bank.dialect != "auto" else ""
    text.append(f" · dialect {bank.dialect}{auto}")
    return text


class BankScreen(BankActionScreen[BankData]):
    """Compartment grid with door states and open action; config; recent transactions."""

    SCREEN_TITLE = "Bank"
    MODE = "fleet"
    SCREEN_TITLE_SHOWN = True
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("o", "open_selected", "Open door"),
        Binding("p", "push_config", "Push config"),
    ]
    WRITE_ACTIONS = frozenset({"open_selected", "push_config"})

    def __init__(self, ctx: ConsoleContext, bank_uuid: str) -> None:
        super().__init__(ctx)
        self.bank_uuid = bank_uuid

    def compose_body(self) -> ComposeResult:
        with Vertical(id="bank-summary"):
            yield Static(id="bank-status")
            with Horizontal(id="bank-liveness"):
                yield Static(id="bank-heartbeat")
                yield HeartbeatSparkline(id="bank-spark")
            yield Static(id="bank-config")
        yield CompartmentGrid(id="doors")
        yield Static(Text("recent transactions", style="bold"), classes="section")
        yield TransactionTable(id="bank-transactions")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(CompartmentGrid).focus()

    async def fetch(self) -> BankData:
        bank = await self.ctx.gateway.get_bank(self.bank_uuid)
        transactions = await self.ctx.gateway.list_transactions(self.bank_uuid, RECENT)
        self.ctx.remember_banks([bank])
        return BankData(bank, transactions)

    def draw(self, data: BankData) -> None:
        bank, now = data.bank, self.ctx.clock.now()
        self.query_one("#bank-status", Static).update(status_line(bank))
        heard = age(bank.last_heartbeat_at, now)
        self.query_one("#bank-heartbeat", Static).update(liveness_line(bank, heard))
        spark = self.query_one(HeartbeatSparkline)
        spark.show(self.ctx.heartbeats.gaps(bank.uuid, now), 3.0 * bank.heartbeat_interval_seconds)
        self.query_one("#bank-config", Static).update(config_line(bank))
        self.query_one(CompartmentGrid).show(bank.compartments, now)
        table = self.query_one(TransactionTable)
        table.show(data.transactions, {bank.uuid: bank.name}, self.query_text)

    def headline(self, data: BankData) -> Text:
        text = Text(data.bank.name, style="bold")
        if data.bank.location:
            text.append(f" · {data.bank.location}")
        text.append(f" · {short_id(data.bank.uuid)}", style="dim")
        return text

    def focus_main(self) -> None:
        self.query_one(CompartmentGrid).focus()

    @property
    def bank(self) -> BankView | None:
        return self.data.bank if self.data else None

    def _open_request(self, number: int) -> OpenRequest | None:
        bank = self.bank
        if bank is None:
            return None
        return OpenRequest(bank.uuid, bank.name, bank.location, number)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_open_selected(self) -> None:
        selected = self.query_one(CompartmentGrid).selected
        request = self._open_request(selected.number) if selected else None
        if request is not None:
            self.ask_open(request)

    def on_compartment_grid_chosen(self, event: CompartmentGrid.Chosen) -> None:
        request = self._open_request(event.number)
        if request is not None:
            self.ask_open(request)  # refused quietly in read-only mode

    def action_push_config(self) -> None:
        bank = self.bank
        if bank is not None:
            self.push_config(BankRequest(bank.uuid, bank.name, bank.location))

    def palette_commands(self) -> Iterable[PaletteCommand]:
        bank = self.bank
        if bank is None:
            return
        for command in self.bank_commands(bank, discover=True):
            yield PaletteCommand(
                command.name,
                command.help,
                command.callback,
                changes_state=command.changes_state,
                discover=True,
            )
