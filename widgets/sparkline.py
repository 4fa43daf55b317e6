"""A one-line heartbeat sparkline: the gaps between recent heartbeats, scaled to the
silence after which a bank is declared offline (3 x its heartbeat interval).

Low bars are a steady pulse; a bar that keeps growing is a bank going quiet. The
last bar is the silence so far, so the line moves even when nothing arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

BARS = "▁▂▃▄▅▆▇█"


def spark(values: Sequence[float], ceiling: float, width: int = 6) -> str:
    """The last `width` values as bar characters, `ceiling` and above being the tallest."""
    if not values or ceiling <= 0:
        return ""
    out = []
    for value in list(values)[-width:]:
        ratio = min(max(value / ceiling, 0.0), 1.0)
        out.append(BARS[min(len(BARS) - 1, int(ratio * (len(BARS) - 1) + 0.5))])
    return "".join(out)


def spark_look(values: Sequence[float], ceiling: float, width: int = 6) -> tuple[str, str]:
    """What `spark_text` would show (bars and tail style), cheap to compare."""
    if not values:
        return ("", "")
    return (spark(values, ceiling, width), _tail_style(values[-1], ceiling))


def spark_text(values: Sequence[float], ceiling: float, width: int = 6) -> Text:
    """The sparkline with its tail coloured when the latest silence passes one interval."""
    line = spark(values, ceiling, width)
    if not line:
        return Text("")
    text = Text(line[:-1], style="green")
    text.append(line[-1], style=_tail_style(values[-1], ceiling))
    return text


def _tail_style(silence: float, ceiling: float) -> str:
    """Red once the silence reaches the offline threshold, yellow past one interval."""
    if silence >= ceiling:
        return "bold red"
    return "yellow" if silence > ceiling / 3 else "green"


class HeartbeatSparkline(Static):
    """The sparkline as a widget (bank header): set `values` and `ceiling`."""

    DEFAULT_CSS = """
    HeartbeatSparkline { width: auto; min-width: 6; }
    """

    values: reactive[tuple[float, ...]] = reactive(tuple)
    ceiling: reactive[float] = reactive(90.0)

    def show(self, values: Sequence[float], ceiling: float) -> None:
        """Replace the plotted gaps (seconds) and the offline threshold."""
        self.values = tuple(values)
        self.ceiling = ceiling

    def render(self) -> Text:
        if not self.values:
            return Text("no heartbeat", style="dim")
        return spark_text(self.values, self.ceiling, width=12)
