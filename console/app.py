"""The Textual operations console: `LockerConsoleApp(gateway, readonly=..., clock=...)`.

The app talks only to a `ConsoleGateway`. It runs one `BackendWatcher` (on a timer, in a
worker) that reads connectivity and the stored events after the last position seen and
says what deserves a toast. Each screen refreshes its own data on its own timer, in its
own worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.theme import Theme

from backend.domain.timeutil import Clock, SystemClock
from backend.gateway import ConsoleGateway
from backend.run_mode import RunMode
from console.alerts import Toast
from console.context import ConsoleContext
from console.modals.confirm import ConfirmModal, confirm_quit
from console.modals.help import HelpModal
from console.palette import ConsoleCommands, PaletteCommand
from console.screens.actions import ShowBank
from console.screens.bank import BankScreen
from console.screens.base import LiveScreen
from console.screens.fleet import FleetScreen
from console.screens.provisioning import ProvisioningScreen
from console.screens.tabs import top_level_screens
from console.watcher import BackendWatcher

STYLES = Path(__file__).resolve().parent.parent / "styles"

# Colours that keep their meaning when the terminal has only 16 (they map onto the
# standard ANSI palette); with a 16-colour terminal the app switches to `ansi-dark`,
# which uses the terminal's own palette. Words carry every state either way.
LOCKER_THEME = Theme(
    name="locker",
    primary="#5f87d7",
    secondary="#00afaf",
    accent="#d7af00",
    warning="#d7af00",
    error="#d75f5f",
    success="#5faf5f",
    foreground="#e4e4e4",
    background="#000000",
    surface="#121212",
    panel="#1c1c1c",
    dark=True,
)

# The top-level screens (tabs), each declared on its own class (`console/screens/tabs.py`).
SCREENS = top_level_screens()


class LockerConsoleApp(App[None]):
    """Fleet, bank, transactions, events and provisioning screens over a ConsoleGateway."""

    TITLE = "locker-console"
    CSS_PATH = STYLES / "console.tcss"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        *(Binding(tab.key, f"show('{tab.name}')", tab.label, show=False) for tab, _ in SCREENS),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(
        self,
        gateway: ConsoleGateway,
        *,
        readonly: bool = False,
        clock: Clock | None = None,
        refresh_interval: float = 0.25,
        run_mode: RunMode = RunMode.STANDALONE,
        role: str = "operator",
    ) -> None:
        super().__init__()
        self.readonly = readonly
        self.ctx = ConsoleContext(
            gateway=gateway,
            clock=clock or SystemClock(),
            readonly=readonly,
            refresh_interval=refresh_interval,
            run_mode=run_mode,
            role=role,
        )
        self.watcher = BackendWatcher(self.ctx)
        self._watching = False
        for tab, screen in SCREENS:
            self.add_mode(tab.name, partial(screen, self.ctx))

    @property
    def gateway(self) -> ConsoleGateway:
        return self.ctx.gateway

    @property
    def role(self) -> str:
        """`operator`, or `app` (attach mode with an app token: read and open only)."""
        return self.ctx.role

    @property
    def ready(self) -> bool:
        """True once connectivity is known and the stored events have been read to the end."""
        return self.watcher.ready

    def on_mount(self) -> None:
        self.register_theme(LOCKER_THEME)
        # Headless (tests, snapshots) always uses our theme, whatever the environment says.
        sixteen = not self.is_headless and self.console.color_system in ("standard", "windows")
        self.theme = "ansi-dark" if sixteen else "locker"
        self.switch_mode(SCREENS[0][0].name)
        self.set_interval(self.ctx.refresh_interval, self.watch_tick)
        self.watch_tick()

    # ----- navigation --------------------------------------------------------------------

    def action_show(self, mode: str) -> None:
        """Switch to one of the top-level screens (each keeps its own state and filter)."""
        self.switch_mode(mode)

    def on_show_bank(self, message: ShowBank) -> None:
        self.push_screen(BankScreen(self.ctx, message.bank_uuid))

    def action_help(self) -> None:
        """The keys that apply here, and the meaning of the state words."""
        screen = self.screen
        if isinstance(screen, HelpModal):
            return
        title = screen.SCREEN_TITLE if isinstance(screen, LiveScreen) else "console"
        self.push_screen(HelpModal(title, self.help_keys(screen), self.readonly))

    def help_keys(self, screen: Screen[object]) -> list[tuple[str, str]]:
        """The focused widget's shown keys, this screen's, then the console's (not Textual's
        generic ones), each only when it applies."""
        ours = _declared(type(screen), LiveScreen) | _declared(type(self), LockerConsoleApp)
        keys: list[tuple[str, str]] = []
        for active in screen.active_bindings.values():
            binding = active.binding
            if not (active.enabled and binding.description):
                continue
            if (binding.key, binding.action) in ours or (
                active.node not in (screen, self) and binding.show
            ):
                keys.append((self.get_key_display(binding), binding.description))
        return [
            *keys,
            ("ctrl+p", "Command palette (every command)"),
            ("arrows", "Move the cursor"),
            ("j k g G", "Down, up, first, last row (Home/End too)"),
            ("s S", "Sort by the next column, reverse (or click a header)"),
            ("tab", "Next part of the screen"),
        ]

    # ----- palette -----------------------------------------------------------------------

    def _all_commands(self, screen: Screen[object]) -> Iterable[PaletteCommand]:
        """Palette commands: navigation, the screen's own, then per-bank commands."""
        for tab, _ in SCREENS:
            yield PaletteCommand(
                f"Show {tab.label.lower()}",
                f"Switch to the {tab.label} screen ({tab.key})",
                self._show(tab.name),
            )
        yield PaletteCommand("Help", "Keys and state words (?)", self.action_help)
        if not isinstance(screen, ProvisioningScreen):
            yield PaletteCommand(
                "Create bank",
                "Open the provisioning form (the token is shown once)",
                self._create_bank,
                changes_state=True,
            )
        if isinstance(screen, LiveScreen):
            yield PaletteCommand("Filter", "Filter this screen's table (/)", screen.action_filter)
            yield from screen.palette_commands()
        for bank in list(self.ctx.banks):
            uuid = bank.uuid
            yield PaletteCommand(
                f"View bank: {bank.name}",
                f"{bank.location} · {bank.status}",
                lambda uuid=uuid: self.post_message(ShowBank(uuid)),  # type: ignore[misc]  # lambda default capture
                discover=False,
            )
        if isinstance(screen, FleetScreen | ProvisioningScreen):
            for bank in list(self.ctx.banks):
                yield from screen.bank_commands(bank, discover=False)

    def commands_for(self, screen: Screen[object]) -> Iterable[PaletteCommand]:
        """Palette commands for `screen`; none that changes anything in read-only mode."""
        for command in self._all_commands(screen):
            if self.readonly and command.changes_state:
                continue
            if self.role == "app" and command.changes_state and not command.app_allowed:
                continue  # the backend would refuse it for this token's role
            yield command

    async def action_create_bank(self) -> None:
        await self._create_bank()

    async def _create_bank(self) -> None:
        await self.switch_mode("provisioning")
        screen = self.screen
        if isinstance(screen, ProvisioningScreen) and self.ctx.may_administer:
            screen.action_new_bank()

    async def action_quit(self) -> None:
        """Standalone, quitting stops the services the whole fleet depends on: ask first
        (saying how many banks are connected). Attached, the backend keeps running."""
        if self.ctx.run_mode != RunMode.STANDALONE:
            self.exit()
            return
        if isinstance(self.screen, ConfirmModal):
            return
        connected = sum(1 for bank in self.ctx.banks if bank.status == "online")

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.exit()

        self.push_screen(confirm_quit(connected), answered)

    def _show(self, mode: str) -> Callable[[], object]:
        return lambda: self.switch_mode(mode)

    # ----- the watcher: connectivity, events, toasts -------------------------------------

    def watch_tick(self) -> None:
        if self._watching:
            return
        self._watching = True
        self.watch_backend()

    @work(exclusive=True, group="watch", exit_on_error=False)
    async def watch_backend(self) -> None:
        """Read status() and the events after our position; toast what deserves it."""
        try:
            for alert in await self.watcher.poll():
                self.toast(alert)
        finally:
            self._watching = False

    def toast(self, alert: Toast) -> None:
        """Show one alert (errors stay longer)."""
        timeout = 12.0 if alert.severity == "error" else 6.0
        self.notify(
            alert.message, title=alert.title, severity=alert.severity, timeout=timeout, markup=False
        )


def _declared(cls: type[object], root: type[object]) -> set[tuple[str, str]]:
    """(key, action) of the bindings declared by `root` and its subclasses up to `cls`."""
    out: set[tuple[str, str]] = set()
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, root):
            for binding in klass.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding):
                    out.add((binding.key, binding.action))
    return out
