"""tune_gc: the entry points' garbage-collector settings."""

from __future__ import annotations

import gc

from backend.gc_tuning import GEN0_THRESHOLD, tune_gc


def test_tune_gc_freezes_start_up_state_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GEN0_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
