"""The in-memory heartbeat history: 4 bytes a heartbeat, and what that costs in truth."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from backend.heartbeat_history import DEFAULT_KEEP, HeartbeatHistory

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
BANK = "bank-1"


def beats(history: HeartbeatHistory, gaps: list[float], lags: list[float]) -> list[datetime]:
    """Record heartbeats `gaps` seconds apart with `lags`; their true arrival times."""
    at = T0
    arrived = []
    for gap, lag in zip(gaps, lags, strict=True):
        at += timedelta(seconds=gap)
        history.record(BANK, at, at - timedelta(seconds=lag))
        arrived.append(at)
    return arrived


def test_no_bank_no_samples() -> None:
    assert HeartbeatHistory().samples(BANK) == []
    nothing = HeartbeatHistory(keep=0)
    nothing.record(BANK, T0, T0)
    assert nothing.samples(BANK) == []


def test_a_bank_costs_four_bytes_a_heartbeat() -> None:
    history = HeartbeatHistory()
    history.record(BANK, T0, T0)
    assert len(history._rings[BANK].data) == 4 * DEFAULT_KEEP


def test_the_last_keep_oldest_first_each_near_the_truth() -> None:
    """An hour and a half of 5 s heartbeats with jitter and a few long silences: the last
    720 are kept, oldest first; each arrival within half a unit of its own gap (no
    rounding adds up over the ring), each lag to three significant digits."""
    rng = random.Random(19)
    gaps = [5 + rng.uniform(-0.3, 0.3) for _ in range(1_100)]
    for index, silence in ((300, 61.7), (800, 3_599.2), (1_000, 0.004)):
        gaps[index] = silence
    lags = [rng.choice((0.012, 0.25, 1.5, -0.4, 37.25, 4_000.0)) for _ in gaps]
    history = HeartbeatHistory()
    arrived = beats(history, gaps, lags)
    samples = history.samples(BANK)
    assert len(samples) == DEFAULT_KEEP
    kept = range(len(gaps) - DEFAULT_KEEP, len(gaps))
    for sample, index in zip(samples, kept, strict=True):
        error = abs((sample.received_at - arrived[index]).total_seconds())
        allowed = max(abs(gaps[index]) / 1024, 0.001)  # half floats: 10 mantissa bits
        assert error <= allowed, (index, error)
        assert abs(sample.lag_seconds - lags[index]) <= abs(lags[index]) / 1024 + 0.001
    assert [s.received_at for s in samples] == sorted(s.received_at for s in samples)


def test_since_filters_and_the_order_holds_before_the_ring_is_full() -> None:
    history = HeartbeatHistory(keep=10)
    arrived = beats(history, [5.0] * 4, [0.25, 1.5, 0.5, 2.0])
    samples = history.samples(BANK)
    assert [s.received_at for s in samples] == arrived
    assert [s.lag_seconds for s in samples] == [0.25, 1.5, 0.5, 2.0]
    assert history.samples(BANK, since=arrived[1]) == samples[2:]


def test_a_ring_of_one_keeps_the_newest() -> None:
    history = HeartbeatHistory(keep=1)
    arrived = beats(history, [5.0, 7.5, 2.5], [0.25, 0.5, 0.75])
    assert [(s.received_at, s.lag_seconds) for s in history.samples(BANK)] == [(arrived[-1], 0.75)]


def test_a_silence_longer_than_the_format_holds_starts_anew() -> None:
    """Over 18 hours between two heartbeats: the older ones go, the new one is exact."""
    history = HeartbeatHistory(keep=10)
    arrived = beats(history, [5.0, 5.0, 70_000.0, 5.0], [0.25] * 4)
    assert [s.received_at for s in history.samples(BANK)] == arrived[2:]


def test_a_clock_stepping_back_and_huge_lags_do_not_break_it() -> None:
    history = HeartbeatHistory(keep=10)
    arrived = beats(history, [5.0, -2.0, 5.0], [1e9, -1e9, 0.5])
    samples = history.samples(BANK)
    assert [s.received_at for s in samples] == arrived
    assert [s.lag_seconds for s in samples] == [65_504.0, -65_504.0, 0.5]


def test_forget() -> None:
    history = HeartbeatHistory()
    beats(history, [5.0], [0.25])
    history.forget(BANK)
    assert history.samples(BANK) == []
