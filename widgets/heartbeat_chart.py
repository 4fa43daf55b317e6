"""Heartbeat interval and arrival-lag charts of one bank over the last hour, with a time
axis: Textual `Sparkline`s fed one value a minute from the backend's heartbeat history.

interval: the longest gap between two heartbeats ending in that minute, or the silence
so far when none arrived (a bank going quiet shows as a growing bar). lag: the latest
arrival behind the device's own timestamp in that minute (0 when none arrived).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import pairwise

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from backend.domain.timeutil import ensure_utc
from backend.views import HeartbeatSample
from widgets.formatting import duration

WINDOW = timedelta(hours=1)
BUCKETS = 60  # one a minute
LABEL_WIDTH = 9  # "interval " / "lag      "
VALUE_WIDTH = 11  # " max 31.0s"


def per_minute(
    samples: Sequence[HeartbeatSample], now: datetime
) -> tuple[list[float], list[float]]:
    """(interval, lag) per minute of the last hour, oldest minute first."""
    now = ensure_utc(now)
    start = now - WINDOW
    step = WINDOW.total_seconds() / BUCKETS
    intervals = [0.0] * BUCKETS
    lags = [0.0] * BUCKETS
    arrivals = [ensure_utc(s.received_at) for s in samples]

    def bucket(at: datetime) -> int | None:
        index = int((at - start).total_seconds() // step)
        return index if 0 <= index < BUCKETS else None

    for sample, arrived in zip(samples, arrivals, strict=True):
        index = bucket(arrived)
        if index is not None:
            lags[index] = max(lags[index], sample.lag_seconds)
    for before, after in pairwise(arrivals):
        index = bucket(after)
        if index is not None:
            intervals[index] = max(intervals[index], (after - before).total_seconds())
    # Minutes without a heartbeat: the silence since the last one, as of that minute's end.
    last = None
    pointer = 0
    for index in range(BUCKETS):
        end = start + timedelta(seconds=step * (index + 1))
        while pointer < len(arrivals) and arrivals[pointer] <= end:
            last = arrivals[pointer]
            pointer += 1
        if intervals[index] == 0.0 and last is not None and last < end - timedelta(seconds=step):
            intervals[index] = (min(end, now) - last).total_seconds()
    return intervals, lags


def time_axis(width: int) -> Text:
    """`-60m      -45m      -30m      -15m       now` across `width` cells."""
    marks = [(0.0, "-60m"), (0.25, "-45m"), (0.5, "-30m"), (0.75, "-15m"), (1.0, "now")]
    line = [" "] * max(width, 1)
    for fraction, label in marks:
        at = round(fraction * (width - 1)) - (len(label) - 1 if fraction == 1.0 else 0)
        at = max(0, min(at, width - len(label)))
        if all(c == " " for c in line[max(0, at - 1) : at + len(label) + 1]):
            line[at : at + len(label)] = label
    return Text("".join(line), style="dim")


class HeartbeatCharts(Vertical):
    """Two sparklines (interval, lag) and a time axis; `show` replaces the data."""

    DEFAULT_CSS = f"""
    HeartbeatCharts {{ height: auto; }}
    HeartbeatCharts Horizontal {{ height: 1; }}
    HeartbeatCharts .chart-label {{ width: {LABEL_WIDTH}; }}
    HeartbeatCharts .chart-value {{ width: {VALUE_WIDTH}; padding: 0 0 0 1; }}
    HeartbeatCharts Sparkline {{ width: 1fr; height: 1; }}
    HeartbeatCharts #chart-axis {{ padding: 0 {VALUE_WIDTH} 0 {LABEL_WIDTH}; height: 1; }}
    HeartbeatCharts #chart-empty {{ height: 1; display: none; }}
    HeartbeatCharts.-empty #chart-empty {{ display: block; }}
    HeartbeatCharts.-empty Horizontal, HeartbeatCharts.-empty #chart-axis {{ display: none; }}
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static("interval", classes="chart-label")
            yield Sparkline([], id="chart-interval")
            yield Static("", id="interval-max", classes="chart-value")
        with Horizontal():
            yield Static("lag", classes="chart-label")
            yield Sparkline([], id="chart-lag")
            yield Static("", id="lag-max", classes="chart-value")
        yield Static("", id="chart-axis")
        yield Static("", id="chart-empty")

    def on_mount(self) -> None:
        self.say("loading heartbeats…")

    def on_resize(self) -> None:
        self._axis()

    def _axis(self) -> None:
        width = max(1, self.size.width - LABEL_WIDTH - VALUE_WIDTH)
        self.query_one("#chart-axis", Static).update(time_axis(width))

    def say(self, words: str) -> None:
        """No charts: `words` instead (no heartbeat in the last hour, backend unreachable)."""
        self.add_class("-empty")
        self.query_one("#chart-empty", Static).update(Text(words, style="dim"))

    def show(self, samples: Sequence[HeartbeatSample], now: datetime) -> None:
        intervals, lags = per_minute(samples, now)
        if not any(intervals) and not any(lags) and not samples:
            self.say("heartbeats: none received by this backend in the last hour")
            return
        self.remove_class("-empty")
        self.query_one("#chart-interval", Sparkline).data = intervals
        self.query_one("#chart-lag", Sparkline).data = lags
        self.query_one("#interval-max", Static).update(f"max {duration(max(intervals))}")
        self.query_one("#lag-max", Static).update(f"max {duration(max(lags))}")
        self._axis()
