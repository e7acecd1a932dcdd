"""The daemon process's settings for CPython's cyclic garbage collector.

Batch intake keeps each request's objects (records, results, outbox entries)
alive until its group commit returns, so under CPython's default thresholds
(700, 10, 10) they are scanned by several young collections, promoted, and
counted towards full collections that walk every queued message again: py-spy
put the collector at ~35-40% of the daemon's CPU in ``bench.e2e --intake
batch``. Almost nothing the daemon allocates forms cycles, so collecting young
objects every 10,000 net allocations instead of 700 lets a request's objects die
by reference counting first; and what startup built (modules, classes, config)
is frozen out of every later scan.
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 10_000


def configure() -> None:
    """Once, in the daemon process, after startup's imports and before serving."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
