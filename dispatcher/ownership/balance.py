"""How many buckets a process should own, and which to take or let go.

Pure arithmetic, no I/O: every process computes the same fair share, ceil(B / live
processes), takes free buckets while it owns fewer, and lets go of its extras
(after draining them) while it owns more. Rounding up means the fair shares cover
every bucket however they fall, so no bucket waits for a process that will never
take it; a process may own fewer (the others got there first).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable


def fair_share(buckets: int, live: int) -> int:
    """ceil(buckets / live): the most buckets one of ``live`` processes should own."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    return math.ceil(buckets / max(1, live))


def to_take(free: Iterable[int], owned: int, share: int, *, start: int = 0, buckets: int) -> list[int]:
    """The free buckets to try to claim, in the order to try them: from ``start`` on (each
    process starts at its own offset, so processes starting together seldom collide)."""
    want = share - owned
    if want <= 0:
        return []
    order = sorted(free, key=lambda b: (b - start) % buckets)
    return order[:want]


def to_release(owned: Collection[int], share: int) -> list[int]:
    """The extras to let go of: the highest-numbered beyond the fair share."""
    extra = len(owned) - share
    return sorted(owned)[-extra:] if extra > 0 else []
