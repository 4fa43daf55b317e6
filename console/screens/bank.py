"""Bank: one bank's doors (grid, jams included), liveness with heartbeat interval and
arrival-lag charts over the last hour, configuration, and below, its recent transactions
and its event log (`enter` on an event shows it whole)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static, TabbedContent, TabPane

from backend.views import BankView, EventView, HeartbeatSample, TransactionView
from console.attention import jammed_doors
from console.context import ConsoleContext
from console.modals.confirm import BankRequest, OpenRequest
from console.modals.edit_bank import BankEdit, EditBankModal
from console.modals.event_detail import EventDetailModal
from console.modals.timeline import TimelineModal
from console.palette import PaletteCommand
from console.screens.actions import BankActionScreen
from widgets.badges import state_text
from widgets.compartment_grid import CompartmentGrid
from widgets.event_log import EventTable
from widgets.formatting import age, clock_time, duration, short_id
from widgets.heartbeat_chart import HeartbeatCharts
from widgets.transaction_timeline import TransactionTable

RECENT = 50
EVENTS = 200


@dataclass(frozen=True)
class BankData:
    """What the bank screen shows."""

    bank: BankView
    transactions: list[TransactionView]
    events: list[EventView]
    heartbeats: list[HeartbeatSample]


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
        Binding("e", "edit", "Edit"),
        Binding("t", "tab('bank-tab-transactions')", "Transactions", show=False),
        Binding("l", "tab('bank-tab-events')", "Event log", show=False),
    ]
    WRITE_ACTIONS = frozenset({"open_selected", "push_config", "edit"})

    def __init__(self, ctx: ConsoleContext, bank_uuid: str) -> None:
        super().__init__(ctx)
        self.bank_uuid = bank_uuid

    def compose_body(self) -> ComposeResult:
        with Vertical(id="bank-summary"):
            yield Static(Text("loading…", style="dim"), id="bank-status")
            yield Static(id="bank-heartbeat")
            yield Static(id="bank-config")
            yield HeartbeatCharts(id="bank-charts")
        yield CompartmentGrid(id="doors")
        with TabbedContent(id="bank-tabs", initial="bank-tab-transactions"):
            with TabPane("Transactions (t)", id="bank-tab-transactions"):
                yield TransactionTable(id="bank-transactions")
            with TabPane("Event log (l)", id="bank-tab-events"):
                yield EventTable(id="bank-events")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(CompartmentGrid).focus()

    async def fetch(self) -> BankData:
        gateway = self.ctx.gateway
        bank = await gateway.get_bank(self.bank_uuid)
        transactions = await gateway.list_transactions(self.bank_uuid, RECENT)
        events = await gateway.bank_events(self.bank_uuid, EVENTS)
        heartbeats = await gateway.heartbeat_history(self.bank_uuid)
        self.ctx.remember_banks([bank])
        return BankData(bank, transactions, events, heartbeats)

    def draw(self, data: BankData) -> None:
        bank, now = data.bank, self.ctx.clock.now()
        self.query_one("#bank-status", Static).update(status_line(bank))
        heard = age(bank.last_heartbeat_at, now)
        self.query_one("#bank-heartbeat", Static).update(liveness_line(bank, heard))
        self.query_one("#bank-config", Static).update(config_line(bank))
        self.query_one(HeartbeatCharts).show(data.heartbeats, now)
        self.query_one(CompartmentGrid).show(
            bank.compartments, now, jammed=jammed_doors(data.transactions)
        )
        names = {bank.uuid: bank.name}
        self.query_one(TransactionTable).show(data.transactions, names, self.query_text)
        events = self.query_one(EventTable)
        events.show(data.events, names, self.query_text)
        if not events.has_focus:
            events.follow()  # the newest at the bottom, in view

    def show_unreachable(self, words: str) -> None:
        """Where nothing was ever fetched, say why instead of "no compartments"."""
        if self.data is None:
            self.query_one("#bank-status", Static).update(Text(words, style="bold red"))
            self.query_one(HeartbeatCharts).say(words)
            self.query_one(CompartmentGrid).placeholder = words

    def action_edit(self) -> None:
        """Edit name, location, interval, mapping, dialect (the bank captured now)."""
        bank = self.bank
        if bank is not None and self.may_act():
            self.app.push_screen(EditBankModal(bank), self._edited)

    def _edited(self, edit: BankEdit | None) -> None:
        if edit is None:
            self.focus_main()
            return
        gateway = self.ctx.gateway
        self.submit(
            "Edit bank",
            lambda: gateway.update_bank(
                edit.bank_uuid,
                name=edit.name,
                location=edit.location,
                heartbeat_interval_seconds=edit.heartbeat_interval_seconds,
                dialect=edit.dialect,
                compartments=edit.compartments,
            ),
            lambda bank: self.notify(f"{bank.name} saved.", title="Bank edited", markup=False),
        )
        self.focus_main()

    def action_tab(self, pane: str) -> None:
        """Show the transactions or the event log of this bank."""
        self.query_one(TabbedContent).active = pane

    def on_transaction_table_chosen(self, event: TransactionTable.Chosen) -> None:
        data = self.data
        txn = next(
            (
                t
                for t in (data.transactions if data else [])
                if t.transaction_id == event.transaction_id
            ),
            None,
        )
        if txn is not None and data is not None:
            self.app.push_screen(TimelineModal(txn, data.bank.name, data.bank.location))

    def on_event_table_chosen(self, event: EventTable.Chosen) -> None:
        data = self.data
        chosen = (
            next((e for e in data.events if e.position == event.position), None) if data else None
        )
        if chosen is not None:
            self.app.push_screen(EventDetailModal(chosen, self.ctx.name_of(chosen.aggregate_uuid)))

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
            self.push_config(BankRequest.of(bank))

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
                app_allowed=command.app_allowed,
            )
