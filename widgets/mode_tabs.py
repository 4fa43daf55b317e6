"""One-line tab strip naming the top-level screens and their keys (`1 Fleet 2 Txns ...`)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.widgets import Static


class ModeTabs(Static):
    """The screens you can switch to; the current one is shown reversed. Clickable."""

    DEFAULT_CSS = """
    ModeTabs { width: auto; height: 1; padding: 0 1 0 1; }
    """

    def __init__(
        self, tabs: Sequence[tuple[str, str, str]], current: str, *, id: str | None = None
    ) -> None:
        """`tabs` are (key, mode, short label); `current` is the mode shown now."""
        parts = []
        for key, mode, label in tabs:
            style = "reverse bold" if mode == current else "dim"
            parts.append(f"[{style} @click=app.show('{mode}')]{key} {label}[/]")
        super().__init__(Content.from_markup(" ".join(parts)), id=id)
