"""A DataTable whose rows are keyed (bank uuid, transaction id, event position) and
updated in place: unchanged cells are left alone, the cursor stays on the same key,
and rows only move when the order of the data itself changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist


class Row(NamedTuple):
    """One table row: its stable key and its cells, in column order."""

    key: str
    cells: tuple[Text, ...]


def _plain(row: Row) -> str:
    return " ".join(cell.plain for cell in row.cells)


def filter_rows(rows: Sequence[Row], query: str) -> list[Row]:
    """Rows whose visible text contains every word of `query` (case-insensitive)."""
    words = query.lower().split()
    if not words:
        return list(rows)
    return [r for r in rows if all(w in (_plain(r) + " " + r.key).lower() for w in words)]


class KeyedTable(DataTable[Text]):
    """Row-cursor table synchronised from a list of `Row`s (see `sync`)."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    COLUMNS: tuple[tuple[str, str, int | None], ...] = ()
    """(key, label, width) of each column; one width may be None: that column takes the
    remaining width (from `FLEX_MIN` to `FLEX_MAX`) and its cells are cut to fit with an
    ellipsis."""
    FLEX_MIN = 10
    FLEX_MAX = 40

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._flex_width = self.FLEX_MIN
        flex = [i for i, (_, _, width) in enumerate(self.COLUMNS) if width is None]
        self._flex_index: int | None = flex[0] if flex else None
        self._rows: list[Row] = []
        self._synced: dict[str, Row] = {}
        self._fitted_rows: dict[str, tuple[Row, Row]] = {}  # key -> (row given, row shown)

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, width in self.COLUMNS:
            self.add_column(label, key=key, width=width or self._flex_width)

    def _flex_for(self, total: int) -> int:
        fixed = sum(width or 0 for _, _, width in self.COLUMNS)
        padding = 2 * self.cell_padding * len(self.COLUMNS)
        spare = total - fixed - padding - 1  # 1: the vertical scrollbar
        return min(self.FLEX_MAX, max(self.FLEX_MIN, spare))

    def on_resize(self) -> None:
        if not any(width is None for _, _, width in self.COLUMNS):
            return
        flex = self._flex_for(self.size.width)
        if flex == self._flex_width:
            return
        self._flex_width = flex
        self._fitted_rows.clear()
        cursor = self.cursor_key
        self.clear(columns=True)
        self._add_columns()
        for row in self._rows:
            self.add_row(*self._fit(row.cells), key=row.key)
        if cursor is not None:
            self.move_to_key(cursor)
        self.call_after_refresh(self._sync_scrollbar)

    def _sync_scrollbar(self) -> None:
        """Textual copies `scroll_y` to the scrollbar only while the bar is shown; a table that
        scrolled (to its cursor) before its first layout showed the bar keeps a thumb at the
        top. Put the thumb where the rows are."""
        if self.show_vertical_scrollbar and self.vertical_scrollbar.position != self.scroll_y:
            self.vertical_scrollbar.position = self.scroll_y

    def _fitted(self, row: Row) -> Row:
        cells = self._fit(row.cells)
        return row if cells is row.cells else Row(row.key, cells)

    def _fitted_all(self, rows: Sequence[Row]) -> list[Row]:
        """`rows` with their flex cells cut to fit; for a row given again (the same object),
        the same fitted row as last time, so `_update_cells` sees it is unchanged."""
        before = self._fitted_rows
        after: dict[str, tuple[Row, Row]] = {}
        out: list[Row] = []
        for row in rows:
            known = before.get(row.key)
            fitted = known[1] if known is not None and known[0] is row else self._fitted(row)
            after[row.key] = (row, fitted)
            out.append(fitted)
        self._fitted_rows = after
        return out

    def _fit(self, cells: tuple[Text, ...]) -> tuple[Text, ...]:
        """Cut the flex column's cell to the flex width (the others are built to fit)."""
        index = self._flex_index
        if index is None or index >= len(cells) or cells[index].cell_len <= self._flex_width:
            return cells
        out = list(cells)
        cut = out[index].copy()
        cut.truncate(self._flex_width, overflow="ellipsis")
        out[index] = cut
        return tuple(out)

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return [str(row.key.value) for row in self.ordered_rows]

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except RowDoesNotExist:
            return None
        return None if row_key.value is None else str(row_key.value)

    def move_to_key(self, key: str) -> bool:
        """Put the cursor on the row with `key`; False when there is no such row."""
        try:
            index = self.get_row_index(key)
        except RowDoesNotExist:
            return False
        if index != self.cursor_row:
            self.move_cursor(row=index)
        return True

    def sync(self, rows: Sequence[Row]) -> None:
        """Make the table show `rows`, in order, touching as little as possible.

        Rows whose key is already shown get only their changed cells updated. Rows that
        are gone are removed and new rows appended when that keeps the order; otherwise
        the table is rebuilt. Either way the cursor stays on the key it was on.
        """
        rows = self._fitted_all(rows)
        self._rows = rows
        wanted = [row.key for row in rows]
        current = self.keys
        if wanted != current:
            cursor = self.cursor_key
            if self._can_patch(current, wanted):
                self._patch(current, rows)
            else:
                self._rebuild(rows)
            if cursor is not None and cursor in set(wanted):
                self.move_to_key(cursor)
            self.call_after_refresh(self._sync_scrollbar)
        self._update_cells(rows)
        self._synced = {row.key: row for row in rows}

    @staticmethod
    def _can_patch(current: list[str], wanted: list[str]) -> bool:
        """True when removing and appending rows gives `wanted` without reordering."""
        present = set(current)
        kept = [k for k in wanted if k in present]
        wanted_set = set(wanted)
        if kept != [k for k in current if k in wanted_set]:
            return False
        tail_start = len(kept)
        return all(k not in present for k in wanted[tail_start:]) and wanted[:tail_start] == kept

    def _patch(self, current: list[str], rows: Sequence[Row]) -> None:
        wanted = {row.key for row in rows}
        for key in current:
            if key not in wanted:
                self.remove_row(key)
        present = set(current)
        for row in rows:
            if row.key not in present:
                self.add_row(*row.cells, key=row.key)

    def _rebuild(self, rows: Sequence[Row]) -> None:
        self.clear()
        for row in rows:
            self.add_row(*row.cells, key=row.key)

    def _update_cells(self, rows: Sequence[Row]) -> None:
        columns = [column.key for column in self.ordered_columns]
        synced = self._synced
        for row in rows:
            previous = synced.get(row.key)
            if previous is row:
                continue  # the very same row object: nothing changed
            old = previous.cells if previous is not None else self.get_row(row.key)
            for column, before, after in zip(columns, old, row.cells, strict=False):
                if before is not after and before != after:
                    self.update_cell(row.key, column, after)
