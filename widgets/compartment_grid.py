"""The compartment grid of one bank: every door with its state in words and when it was
last opened; arrow keys move a cursor, Enter asks to open the compartment under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from backend.views import CompartmentView
from widgets.badges import state_text
from widgets.formatting import age

CELL_WIDTH = 19  # 18 cells of content and one space between compartments


class CompartmentGrid(Widget, can_focus=True):
    """Compartments in a grid that reflows with the width (2 lines per compartment)."""

    DEFAULT_CSS = """
    CompartmentGrid { height: auto; min-height: 2; }
    """

    BINDINGS = [
        Binding("left", "move(-1, 0)", "Left", show=False),
        Binding("right", "move(1, 0)", "Right", show=False),
        Binding("up", "move(0, -1)", "Up", show=False),
        Binding("down", "move(0, 1)", "Down", show=False),
        Binding("enter", "choose", "Open…", show=False),
    ]

    cursor: reactive[int] = reactive(0)

    @dataclass
    class Highlighted(Message):
        """The cursor moved to another compartment."""

        number: int

    @dataclass
    class Chosen(Message):
        """Enter was pressed on a compartment."""

        number: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._compartments: tuple[CompartmentView, ...] = ()
        self._now: datetime | None = None
        self._jammed: frozenset[int] = frozenset()
        self.placeholder = "loading…"
        """What to show before there are compartments (set: "backend unreachable since...")."""

    @property
    def selected(self) -> CompartmentView | None:
        """The compartment under the cursor."""
        if not self._compartments:
            return None
        return self._compartments[min(self.cursor, len(self._compartments) - 1)]

    def show(
        self,
        compartments: Sequence[CompartmentView],
        now: datetime,
        jammed: Iterable[int] = (),
    ) -> None:
        """Show these compartments (the cursor stays on the same number when it still exists);
        the numbers in `jammed` say `jammed` (their last open failed with a jam)."""
        number = self.selected.number if self.selected else None
        jams = frozenset(jammed)
        changed = tuple(compartments) != self._compartments or jams != self._jammed
        self._jammed = jams
        self.placeholder = "no compartments"
        self._compartments = tuple(sorted(compartments, key=lambda c: c.number))
        self._now = now
        if number is not None:
            for index, compartment in enumerate(self._compartments):
                if compartment.number == number:
                    self.cursor = index
        self.cursor = min(self.cursor, max(0, len(self._compartments) - 1))
        if changed:
            self.refresh(layout=True)
        else:
            self.refresh()

    def select(self, number: int) -> None:
        """Move the cursor to compartment `number`."""
        for index, compartment in enumerate(self._compartments):
            if compartment.number == number:
                self.cursor = index

    def _columns(self) -> int:
        return max(1, (self.size.width + 1) // CELL_WIDTH)

    def action_move(self, dx: int, dy: int) -> None:
        if not self._compartments:
            return
        target = self.cursor + dx + dy * self._columns()
        if 0 <= target < len(self._compartments):
            self.cursor = target

    def action_choose(self) -> None:
        if self.selected is not None:
            self.post_message(self.Chosen(self.selected.number))

    def watch_cursor(self, _old: int, _new: int) -> None:
        if self.selected is not None:
            self.post_message(self.Highlighted(self.selected.number))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        columns = max(1, (width + 1) // CELL_WIDTH)
        rows = -(-len(self._compartments) // columns) if self._compartments else 1
        return rows * 2

    def render(self) -> Text:
        if not self._compartments or self._now is None:
            return Text(
                self.placeholder, style="bold red" if "unreachable" in self.placeholder else "dim"
            )
        columns = self._columns()
        lines: list[Text] = []
        for start in range(0, len(self._compartments), columns):
            top, bottom = Text(), Text()
            for offset, compartment in enumerate(self._compartments[start : start + columns]):
                index = start + offset
                first, second = self._cell(
                    compartment, self._now, compartment.number in self._jammed
                )
                if index == self.cursor:
                    style = "reverse" if self.has_focus else "underline"
                    first.stylize(style)
                    second.stylize(style)
                if offset:
                    top.append(" ")
                    bottom.append(" ")
                top.append_text(first)
                bottom.append_text(second)
            lines += [top, bottom]
        return Text("\n").join(lines)

    @staticmethod
    def _cell(compartment: CompartmentView, now: datetime, jammed: bool) -> tuple[Text, Text]:
        first = Text(f" #{compartment.number:<4}")
        first.append_text(state_text("jammed" if jammed else compartment.door_state, width=12))
        if compartment.last_opened_at is None:
            second = Text(" never opened".ljust(CELL_WIDTH - 1), style="dim")
        else:
            second = Text(f" opened {age(compartment.last_opened_at, now)}".ljust(CELL_WIDTH - 1))
        return first, second
