"""Progress of long CLI work (`projections rebuild`, `db upgrade`, `simulate` ramp-up):
a rich progress bar on a terminal, plain lines otherwise (logs, pipes, CI).

    with progress("rebuilding read models", total=events) as report:
        report.update(done)          # any thread (rich and the plain writer lock)
    # the final line says how far it got and how long it took

On a terminal the bar goes to stderr (stdout stays the command's answer); without one,
a line at most every `PLAIN_STEP` of the total (and every `PLAIN_EVERY` seconds for
work without a total), then one at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

PLAIN_STEP = 0.1
PLAIN_EVERY = 5.0


class Report(Protocol):
    def update(self, completed: int, total: int | None = None) -> None:
        """`completed` units done (of `total`, when it is known or changes)."""


class _RichReport:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self.completed = 0
        self.total: int | None = None

    def update(self, completed: int, total: int | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        self._progress.update(self._task, completed=completed, total=self.total)


class _PlainReport:
    def __init__(self, description: str, total: int | None, stream: IO[str]) -> None:
        self._description = description
        self._stream = stream
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_line = self._started
        self._last_fraction = 0.0
        self.completed = 0
        self.total = total

    def update(self, completed: int, total: int | None = None) -> None:
        with self._lock:
            self.completed = completed
            if total is not None:
                self.total = total
            now = time.monotonic()
            if self.total:
                fraction = completed / self.total
                crossed = int(fraction / PLAIN_STEP) > int(self._last_fraction / PLAIN_STEP)
                if not crossed or completed >= self.total:
                    return  # a line per tenth; the end has its own line
                self._last_fraction = fraction
            elif now - self._last_line < PLAIN_EVERY:
                return
            self._last_line = now
            self._line()

    def _line(self, prefix: str = "", suffix: str = "") -> None:
        done = f"{self.completed}/{self.total}" if self.total else str(self.completed)
        percent = f" ({100 * self.completed // self.total}%)" if self.total else ""
        line = f"{self._description}: {prefix}{done}{percent}{suffix}"
        print(line, file=self._stream, flush=True)

    def finish(self, failed: bool) -> None:
        with self._lock:
            took = f" in {time.monotonic() - self._started:.1f}s"
            self._line("stopped at " if failed else "done, ", took)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(
    description: str,
    total: int | None = None,
    *,
    stream: IO[str] | None = None,
    terminal: bool | None = None,
) -> Iterator[Report]:
    """Report progress of one piece of work (see the module doc)."""
    out = stream if stream is not None else sys.stderr
    if terminal if terminal is not None else is_terminal(out):
        console = Console(file=out, force_terminal=True)
        bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield _RichReport(bar, task)
        return
    report = _PlainReport(description, total, out)
    try:
        yield report
    except BaseException:
        report.finish(failed=True)
        raise
    report.finish(failed=False)
