"""Garbage-collector settings for a long-running backend process.

With the default thresholds (700, 10, 10) a backend holding thousands of cached banks ran
a full (generation 2) collection every second or two, 100 to 160 ms each with 5,000 banks,
holding the GIL: the event loop stalled (loop lag p95 250 ms in bench/fleet.py) and
heartbeats queued behind it. Each write transaction leaves a cyclic session behind, so
young collections still run often enough to reclaim that; what changes is how often the
whole heap is walked. Objects alive at start-up (modules, settings, the auth directory)
are frozen out of collection entirely.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000
"""Allocations (net) between young collections; the default is 700."""
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 10


def tune_gc() -> None:
    """Collect once, freeze what survived (start-up state), then collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
