"""Interpreter settings for the daemon process, for accept latency (``gcpolicy`` has the GC's thresholds).

Both are process-wide, so only ``wadispatch run`` applies them (tests and benches
embedding the daemon keep the interpreter's defaults). Measured with a probe in
the daemon during ``bench.e2e --accept-rate 800`` (bench/RESULTS.md):

* The cyclic GC's full (generation 2) collections walked the whole heap built at
  startup (hypercorn, quart, the actors, their pools, config): 20-60 ms with the
  event loop stopped, twice in a 4 s run, which alone is the p99 of the accept
  latency. ``gcpolicy`` freezes what the imports built, before the daemon starts;
  ``settle()`` freezes again once it serves, so what ``run_daemon`` built is out
  of the collector's sight too.
* The LMDB commit runs in a worker thread (``Store``); it needs the GIL to start
  and again when the fsync returns. With CPython's default 5 ms switch interval
  a busy trio thread keeps the writer waiting up to 5 ms at each of those points.
  A 0.5 ms interval bounds that wait; the trio thread loses little, as the writer
  holds the GIL only briefly (the fsync itself runs without it).
"""

from __future__ import annotations

import gc
import sys
from typing import Final

SWITCH_INTERVAL: Final = 0.0005  # seconds; CPython's default is 0.005


def tune() -> None:
    """Before the daemon starts: the GIL switch interval."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def settle() -> None:
    """Once serving: collect the startup garbage, then exempt what is left from future collections."""
    gc.collect()
    gc.freeze()
