"""LogThrottle: a burst per window, then one summary of what was held back."""

from __future__ import annotations

import logging

import pytest

from backend.log_throttle import LogThrottle


def test_burst_then_summary_per_window_and_at_flush(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    logger = logging.getLogger("test.throttle")
    throttle = LogThrottle("things", burst=3, window=10.0, logger=logger, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert [throttle.allow() for _ in range(1000)] == [True] * 3 + [False] * 997
        assert caplog.records == []  # the summary waits for the window to end
        now[0] += 10.0
        assert throttle.allow() is True  # a new window: the summary first, then this line
        assert [r.getMessage() for r in caplog.records] == [
            "suppressed 997 similar log lines (things) in the last 10 s"
        ]
        assert [throttle.allow() for _ in range(5)] == [True, True, False, False, False]
        throttle.flush()
        throttle.flush()  # nothing more held back: no second line
    assert [r.getMessage() for r in caplog.records][1:] == [
        "suppressed 3 similar log lines (things) in the last 0 s"
    ]
    assert throttle.suppressed_total == 1000
