"""Pure text helpers shared by the widgets: relative ages, times, durations, truncation.

Everything here takes the current time as an argument, so a frozen clock gives
frozen output (snapshots) and nothing reads the wall clock behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime

from rich.text import Text

from backend.domain.timeutil import ensure_utc

ELLIPSIS = "…"


def age(then: datetime | None, now: datetime) -> str:
    """How long ago, in the largest sensible unit: `3s ago`, `5m ago`, `2h ago`, `4d ago`."""
    if then is None:
        return "never"
    seconds = int((ensure_utc(now) - ensure_utc(then)).total_seconds())
    if seconds < 0:
        return "just now"
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172_800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86_400}d ago"


def clock_time(value: datetime | None) -> str:
    """`HH:MM:SS` in UTC, or an em dash."""
    if value is None:
        return "—"
    return ensure_utc(value).strftime("%H:%M:%S")


def stamp(value: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM:SS UTC`, or an em dash."""
    if value is None:
        return "—"
    return ensure_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """`0.40s`, `12.3s`, `4m 05s`; an em dash when unknown."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def offset(start: datetime, value: datetime | None) -> str:
    """`+0.20s` after `start`, or an em dash when the step has not happened."""
    if value is None:
        return "—"
    return "+" + duration((ensure_utc(value) - ensure_utc(start)).total_seconds())


def truncate(text: str, width: int) -> str:
    """Cut `text` to `width` cells, ending in an ellipsis when cut; control characters go."""
    clean = text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
    if len(clean) <= width:
        return clean
    return clean[: max(0, width - 1)] + ELLIPSIS


def short_id(value: str) -> str:
    """The first block of a uuid, enough to tell rows apart at a glance."""
    return value.split("-", 1)[0][:8]


def text_look(text: Text) -> Hashable:
    """Everything that decides how `text` is drawn (`Text.__eq__` ignores its base style
    and wrapping), to skip repainting a line that did not change."""
    return (
        text.plain,
        tuple(text.spans),
        str(text.style),
        text.justify,
        text.overflow,
        text.no_wrap,
        text.end,
    )


def plural(count: int, noun: str) -> str:
    """`1 bank`, `2 banks`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
