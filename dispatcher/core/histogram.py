"""A fixed-bucket histogram of plain ints, cheap enough for the hot path.

The hot path only bumps an int (no lock, no labels, no metrics library); the
/metrics collector reads a snapshot at scrape time and renders it in
Prometheus' cumulative form.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final, final

import attrs

# Seconds: a send to WhatsApp (tens of ms normally, seconds when it struggles).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds: one LMDB group commit with fsync.
COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Writes per group commit.
BATCH_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0)


@attrs.frozen
class HistogramSnapshot:
    """Upper bounds with cumulative counts (the last bound is +Inf), and the sum."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total: float


@final
class Histogram:
    __slots__ = ("_bounds", "_counts", "_total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("bounds must be a non-empty, strictly increasing sequence")
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le="bound").
        self._counts[bisect_left(self._bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramSnapshot(tuple(buckets), cumulative, self._total)
