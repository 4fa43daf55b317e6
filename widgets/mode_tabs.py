"""One-line tab strip naming the top-level screens and their keys (`1 Fleet 2 Txns ...`).

Below `WIDE` columns (narrower than any terminal worth working in) only the current tab
keeps its label; at 80 columns every tab is named.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.widget import Widget

WIDE = 64


class ModeTabs(Widget):
    """The screens you can switch to; the current one is shown reversed. Clickable."""

    DEFAULT_CSS = """
    ModeTabs { width: auto; height: 1; padding: 0 1 0 1; }
    """

    def __init__(
        self, tabs: Sequence[tuple[str, str, str]], current: str, *, id: str | None = None
    ) -> None:
        """`tabs` are (key, mode, short label); `current` is the mode shown now."""
        super().__init__(id=id)
        self._tabs = list(tabs)
        self._current = current

    def render(self) -> Content:
        wide = self.app.size.width >= WIDE
        parts = []
        for key, mode, label in self._tabs:
            if mode == self._current:
                parts.append(f"[reverse bold @click=app.show('{mode}')]{key} {label}[/]")
            elif wide:
                parts.append(f"[dim @click=app.show('{mode}')]{key} {label}[/]")
            else:
                parts.append(f"[dim @click=app.show('{mode}')]{key}[/]")
        return Content.from_markup(" ".join(parts))
