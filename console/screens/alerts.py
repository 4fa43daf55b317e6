"""Alerts: what the backend derived from the event log that an operator must see (late
execution, a bank offline with its flap count, commands failed or expired). `a`
acknowledges the highlighted one (with an optional note), `r` shows resolved ones too.
The model, flap damping and the API are the backend's (`backend.domain.alerts`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from backend.views import AlertView
from console.context import ConsoleContext
from console.modals.note import NoteModal
from console.palette import PaletteCommand
from console.screens.actions import BankActionScreen
from console.screens.tabs import Tab
from widgets.alert_list import AlertTable


class AlertsScreen(BankActionScreen[list[AlertView]]):
    """Open alerts, newest first (all of them with `r`)."""

    TAB = Tab("5", "alerts", "Alerts")
    BINDINGS = [
        Binding("a", "acknowledge", "Acknowledge"),
        Binding("b", "view_bank", "Bank"),
        Binding("r", "toggle_resolved", "Resolved too"),
    ]
    WRITE_ACTIONS = frozenset({"acknowledge"})
    SELECTION_ACTIONS = frozenset({"acknowledge", "view_bank"})

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self.include_resolved = False

    def compose_body(self) -> ComposeResult:
        yield AlertTable(id="alerts")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(AlertTable).focus()

    async def fetch(self) -> list[AlertView]:
        alerts = await self.ctx.gateway.list_alerts(include_resolved=self.include_resolved)
        self.ctx.count_alerts(alerts if not self.include_resolved else None)
        return alerts

    def draw(self, data: list[AlertView]) -> None:
        table = self.query_one(AlertTable)
        table.show(data, self.ctx.clock.now(), self.query_text)
        if table.row_count:
            self.say(None)
        else:
            what = "No alerts" if self.include_resolved else "No open alerts"
            self.say(self.empty_text(what, "r shows resolved ones too"))

    def headline(self, data: list[AlertView]) -> Text:
        unseen = sum(1 for a in data if a.state == "open" and a.acknowledged_at is None)
        text = Text(f"{unseen} to acknowledge", style="bold red" if unseen else "green")
        kinds = Counter(a.label for a in data if a.state == "open")
        for kind, count in sorted(kinds.items()):
            text.append(f" · {count} {kind}")
        if self.include_resolved:
            text.append(" · resolved shown", style="dim")
        return text

    def focus_main(self) -> None:
        self.query_one(AlertTable).focus()

    def has_selection(self) -> bool:
        return self.cursor_of(AlertTable) is not None

    @property
    def highlighted(self) -> AlertView | None:
        key = self.query_one(AlertTable).cursor_key
        return next((a for a in self.data or [] if str(a.id) == key), None)

    def action_acknowledge(self) -> None:
        """Acknowledge the highlighted alert (the id captured now), with an optional note."""
        alert = self.highlighted
        if alert is None or not self.may_act():
            return
        alert_id = alert.id
        title = f"Acknowledge: {alert.label} · {alert.bank_name or alert.bank_uuid[:8]}"

        def answered(note: str | None) -> None:
            if note is None:
                return
            gateway = self.ctx.gateway
            self.submit(
                "Acknowledge alert",
                lambda: gateway.acknowledge_alert(alert_id, note),
                lambda done: self.notify(
                    f"{done.label} · {done.bank_name}", title="Acknowledged", markup=False
                ),
            )

        self.app.push_screen(NoteModal(title), answered)

    def action_toggle_resolved(self) -> None:
        self.include_resolved = not self.include_resolved
        self.tick(force=True)

    def action_view_bank(self) -> None:
        alert = self.highlighted
        if alert is not None:
            self.view_bank(alert.bank_uuid)

    def palette_commands(self) -> Iterable[PaletteCommand]:
        alert = self.highlighted
        if alert is not None:
            yield PaletteCommand(
                f"Acknowledge alert: {alert.label} · {alert.bank_name}",
                "With an optional note (a)",
                self.action_acknowledge,
                changes_state=True,
            )
