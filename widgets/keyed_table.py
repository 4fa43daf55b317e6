"""A DataTable whose rows are keyed (bank uuid, transaction id, event position) and
updated in place: unchanged cells are left alone, the cursor stays on the same key,
and rows only move when the order of the data (or the chosen sort) changes.

Every table here filters on full values (`Row.values`, the filter syntax of
`backend.search`), sorts by any column in natural order (`s` cycles the column, `S`
reverses, a header click sorts by that column), moves with j/k, g/G, Home/End, and cuts
any cell that does not fit its column with an ellipsis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from backend.search import Term, matches, natural_key, parse

__all__ = ["KeyedTable", "Row", "filter_rows", "natural_key", "row_values"]


class Row(NamedTuple):
    """One table row: its stable key, its cells in column order, and optionally the full
    values the filter matches (field -> text; the cells' text when absent) and per-column
    sort values (column -> comparable; the natural order of the value/cell when absent)."""

    key: str
    cells: tuple[Text, ...]
    values: Mapping[str, str] | None = None
    order: Mapping[str, Any] | None = None


def row_values(row: Row, columns: Sequence[str] = ()) -> Mapping[str, str]:
    """The searchable fields of `row`: its full values, else its cells by column key."""
    if row.values is not None:
        return row.values
    out = {column: cell.plain for column, cell in zip(columns, row.cells, strict=False)}
    out["key"] = row.key
    if not columns:
        out.update({str(i): cell.plain for i, cell in enumerate(row.cells)})
    return out


def filter_rows(rows: Sequence[Row], query: str, columns: Sequence[str] = ()) -> list[Row]:
    """Rows that satisfy `query` (see `backend.search`) on their full values."""
    if not query.strip():
        return list(rows)
    fields: set[str] = set(columns)
    for row in rows[:1]:
        fields |= set(row_values(row, columns))
    terms: list[Term] = parse(query, fields)
    return [row for row in rows if matches(row_values(row, columns), terms)]


class KeyedTable(DataTable[Text]):
    """Row-cursor table synchronised from a list of `Row`s (see `sync`)."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g,home", "scroll_top", "First row", show=False),
        Binding("G,end", "scroll_bottom", "Last row", show=False),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]

    COLUMNS: tuple[tuple[str, str, int | None], ...] = ()
    """(key, label, width) of each column; a width of None makes a flex column: the flex
    columns share the remaining width (each from `FLEX_MIN` to `FLEX_MAX`). Any cell wider
    than its column is cut with an ellipsis."""
    FLEX_MIN = 10
    FLEX_MAX = 80
    FLEX_WEIGHTS: ClassVar[dict[str, int]] = {}
    DEFAULT_ORDER = "default"
    """The name of the data's own order in the sort cycle (e.g. `attention`)."""

    @dataclass
    class SortChanged(Message):
        """The operator chose another sort (column None: the data's own order)."""

        table: KeyedTable
        column: str | None
        reverse: bool

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._flex_indexes = [i for i, (_, _, width) in enumerate(self.COLUMNS) if width is None]
        self._widths = [width or self.FLEX_MIN for _, _, width in self.COLUMNS]
        self._rows: list[Row] = []
        self._given: list[Row] = []
        self._synced: dict[str, Row] = {}
        self._fitted_rows: dict[str, tuple[Row, Row]] = {}  # key -> (row given, row shown)
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._sort_cache: dict[str, tuple[Row, Any]] = {}  # key -> (row, its sort value)

    @property
    def column_keys(self) -> list[str]:
        return [key for key, _, _ in self.COLUMNS]

    def on_mount(self) -> None:
        self._add_columns()

    def _label(self, key: str, label: str, width: int) -> Text:
        text = Text(label)
        if key == self.sort_column:
            text = Text(label + ("▼" if self.sort_reverse else "▲"), style="bold")
        text.truncate(width, overflow="ellipsis")
        return text

    def _add_columns(self) -> None:
        for (key, label, _), width in zip(self.COLUMNS, self._widths, strict=True):
            self.add_column(self._label(key, label, width), key=key, width=width)

    def _flex_widths(self, total: int) -> list[int]:
        """Each column's width when the table is `total` cells wide: the flex columns share
        what the fixed ones leave, by their `FLEX_WEIGHTS` (1 when not named)."""
        fixed = sum(width or 0 for _, _, width in self.COLUMNS)
        padding = 2 * self.cell_padding * len(self.COLUMNS)
        spare = total - fixed - padding - 1  # 1: the vertical scrollbar
        weights = {key: self.FLEX_WEIGHTS.get(key, 1) for key, _, w in self.COLUMNS if w is None}
        whole = max(1, sum(weights.values()))
        shares = {key: spare * weight // whole for key, weight in weights.items()}
        if shares:
            first = next(iter(shares))
            shares[first] += spare - sum(shares.values())  # the rounding goes to the first
        return [
            width or min(self.FLEX_MAX, max(self.FLEX_MIN, shares[key]))
            for key, _, width in self.COLUMNS
        ]

    def on_resize(self) -> None:
        if not self._flex_indexes:
            return
        widths = self._flex_widths(self.size.width)
        if widths == self._widths:
            return
        self._widths = widths
        self._rebuild_all()

    def _rebuild_all(self) -> None:
        """Columns and rows again (new widths or sort labels); the cursor stays on its key."""
        self._fitted_rows.clear()
        cursor = self.cursor_key
        self.clear(columns=True)
        self._add_columns()
        self._rows = self._fitted_all(self._sorted(self._given))
        for row in self._rows:
            self.add_row(*row.cells, key=row.key)
        self._synced = {row.key: row for row in self._rows}
        if cursor is not None:
            self.move_to_key(cursor)
        self.call_after_refresh(self._sync_scrollbar)

    # ----- sorting -----------------------------------------------------------------------

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        """Sort by `column` (None: the data's own order); the cursor stays on its row."""
        if column is not None and column not in self.column_keys:
            raise ValueError(f"no column {column!r}")
        self.sort_column, self.sort_reverse = column, reverse
        self._sort_cache.clear()
        if self.is_mounted:
            self._rebuild_all()
        self.post_message(self.SortChanged(self, column, reverse))

    @property
    def sort_label(self) -> str:
        """`name ▲`, or the name of the data's own order."""
        if self.sort_column is None:
            return self.DEFAULT_ORDER + (" ▼" if self.sort_reverse else "")
        label = dict((k, lbl) for k, lbl, _ in self.COLUMNS)[self.sort_column]
        return f"{label} {'▼' if self.sort_reverse else '▲'}"

    def action_cycle_sort(self) -> None:
        """The next column (after the last one: the data's own order)."""
        keys: list[str | None] = [None, *self.column_keys]
        following = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self.sort_by(following)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_by(column, not self.sort_reverse)
        else:
            self.sort_by(column)

    def _sorted(self, rows: Sequence[Row]) -> list[Row]:
        column = self.sort_column
        if column is None:
            return list(reversed(rows)) if self.sort_reverse else list(rows)
        index = self.column_keys.index(column)
        cache = self._sort_cache

        def key(row: Row) -> Any:
            known = cache.get(row.key)
            if known is not None and known[0] is row:
                return known[1]
            if row.order is not None and column in row.order:
                value = row.order[column]
            elif row.values is not None and column in row.values:
                value = natural_key(row.values[column])
            else:
                value = natural_key(row.cells[index].plain if index < len(row.cells) else "")
            cache[row.key] = (row, value)
            return value

        return sorted(rows, key=key, reverse=self.sort_reverse)

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
        """Cut every cell wider than its column, ending it with an ellipsis."""
        widths = self._widths
        out: list[Text] | None = None
        for index, (cell, width) in enumerate(zip(cells, widths, strict=False)):
            if cell.cell_len <= width:
                continue
            if out is None:
                out = list(cells)
            cut = cell.copy()
            cut.truncate(width, overflow="ellipsis")
            out[index] = cut
        return cells if out is None else tuple(out)

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
        self._given = list(rows)
        rows = self._fitted_all(self._sorted(rows))
        self._rows = rows
        wanted = [row.key for row in rows]
        current = self.keys
        if wanted != current:
            cursor = self.cursor_key
            self._patch(current, rows)  # rows gone removed, new ones appended
            if not self._can_patch(current, wanted):
                self._reorder(wanted)  # then put in order, without re-adding any row
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

    def _reorder(self, wanted: Sequence[str]) -> None:
        """Show the rows (all present) in the order of `wanted`: what `DataTable.sort`
        does (a new key -> index map), cost O(rows), no row re-added or re-rendered."""
        by_value = {key.value: key for key in self._data}
        self._row_locations = TwoWayDict({by_value[key]: index for index, key in enumerate(wanted)})
        self._update_count += 1
        self.refresh()

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
