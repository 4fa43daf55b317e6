"""What the console's button dialogs share: button `x` runs the dialog's `action_x`, and
one widget (a `FOCUS` selector) has the focus when the dialog opens."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Button

ResultT = TypeVar("ResultT")


def button_row(*buttons: Button) -> Horizontal:
    """The dialog's row of buttons (`#buttons` in the stylesheet)."""
    return Horizontal(*buttons, id="buttons")


class ButtonDialog(ModalScreen[ResultT]):
    """A modal whose buttons are named for its actions: `#confirm` runs `action_confirm`."""

    FOCUS: ClassVar[str] = "#cancel"
    """The widget focused when the dialog opens (the safe choice, where there is one)."""

    def on_mount(self) -> None:
        self.query_one(self.FOCUS).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        getattr(self, f"action_{event.button.id}")()
