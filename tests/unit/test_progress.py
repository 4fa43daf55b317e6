"""Progress of long CLI work: plain lines without a terminal, a rich bar with one."""

from __future__ import annotations

import io
import threading

import pytest

from console.progress import progress


def test_plain_lines_without_a_terminal_at_most_every_tenth() -> None:
    out = io.StringIO()
    with progress("rebuilding read models", 1000, stream=out, terminal=False) as report:
        for done in range(0, 1001, 50):
            report.update(done)
    lines = out.getvalue().splitlines()
    assert lines[0] == "rebuilding read models: 100/1000 (10%)"
    assert len(lines) == 10  # 10%..90% and the end
    assert lines[-1].startswith("rebuilding read models: done, 1000/1000 (100%) in ")
    assert "\x1b" not in out.getvalue()  # no escape sequences in a log or a pipe


def test_plain_total_learned_late_from_another_thread_and_a_failure_says_where() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress("replay", stream=out, terminal=False) as report:
        worker = threading.Thread(target=report.update, args=(20, 40))
        worker.start()
        worker.join()
        raise RuntimeError("database went away")
    lines = out.getvalue().splitlines()
    assert lines[0] == "replay: 20/40 (50%)"
    assert lines[-1].startswith("replay: stopped at 20/40 (50%) in ")


def test_a_terminal_gets_a_progress_bar() -> None:
    out = io.StringIO()
    with progress("devices online", 4, stream=out, terminal=True) as report:
        report.update(4)
    drawn = out.getvalue()
    assert "devices online" in drawn and "4/4" in drawn
    assert "\x1b[" in drawn  # drawn for a terminal
