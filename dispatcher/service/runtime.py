"""Interpreter settings for the daemon process: the cyclic GC and the GIL switch interval.

They are process-wide, so only ``wadispatch run`` applies them (tests and benches
embedding the daemon keep the interpreter's defaults). Measured in the daemon
during ``bench.e2e`` (bench/RESULTS.md):

* Batch intake keeps each request's objects (records, results, outbox entries)
  alive until its group commit returns, so under CPython's default thresholds
  (700, 10, 10) they were scanned by several young collections, promoted, and
  counted towards full collections that walk every queued message again: ~35-40%
  of the daemon's CPU. Almost nothing the daemon allocates forms cycles, so young
  collections run every 10,000 net allocations instead of 700 and a request's
  objects die by reference counting first.
* Full collections also walked the whole heap built at startup (modules,
  hypercorn, quart, the actors, their pools, config): 20-60 ms with the event loop
  stopped, twice in a 4 s run at 800 creates/s, which alone was the accept p99.
  ``tune()`` freezes what the imports built; ``settle()`` freezes again once the
  daemon serves, so what ``run_daemon`` built is out of the collector's sight too.
* The LMDB commit runs in the writer thread (``Store``); it needs the GIL to start
  and again when the fsync returns. With CPython's default 5 ms switch interval a
  busy trio thread keeps the writer waiting up to 5 ms at each of those points. A
  0.5 ms interval bounds that wait; the trio thread loses little, as the writer
  holds the GIL only briefly (the fsync itself runs without it).
"""

from __future__ import annotations

import gc
import sys
from typing import Final

GEN0_THRESHOLD: Final = 10_000
SWITCH_INTERVAL: Final = 0.0005  # seconds; CPython's default is 0.005


def tune() -> None:
    """Once, before the daemon starts: freeze startup's heap, young GC threshold, switch interval."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    sys.setswitchinterval(SWITCH_INTERVAL)


def settle() -> None:
    """Once serving: collect the startup garbage, then exempt what is left from future collections."""
    gc.collect()
    gc.freeze()
