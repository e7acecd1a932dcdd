"""Request-rate limit of one number, answered with HTTP 429 rather than waiting.

GCRA form of a token bucket (``rate``/s, bursts of ``burst``): one float of
state, the *theoretical arrival time* of the next admitted request. It reads
the time it is given (``trio.current_time()`` at the caller), never sleeps and
never polls, so it is exact under ``MockClock``: ``burst`` requests pass at
once, then one more every ``1/rate`` seconds.
"""

from __future__ import annotations

import math
from typing import final

# Slack for the float sums of 1/rate steps: without it the burst+k-th request
# can miss its slot by one ulp.
_EPSILON = 1e-9


@final
class RateGate:
    """Admit or refuse, now; a refused request consumes nothing."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval + _EPSILON
        self._tat = -math.inf

    def admit(self, now: float) -> bool:
        tat = self._tat if self._tat > now else now
        if tat - now > self._tolerance:
            return False
        self._tat = tat + self._interval
        return True


@final
class PairGate:
    """Meta's pair rate for one (business number, user): admit or refuse (131056), now.

    Reference 2.5: one message per ``interval`` (6 s) to the same user; bursts of up
    to ``burst`` (45) in ``interval`` are allowed but *borrow* from future quota: after
    n messages in a burst the next one waits about n x ``interval`` (a burst of 20
    means about 2 minutes). Modelled as a theoretical arrival time (TAT) that every
    admitted message pushes ``interval`` further, plus a burst window: a pair that
    owes nothing (TAT reached) opens a window of ``interval`` seconds in which up to
    ``burst`` messages pass at once; outside it, a pair in debt waits for its TAT.
    So 5 at once then the 6th waits until 30 s; one every 6 s always passes. Unlike
    a plain GCRA it never grants "one more every interval" while a burst's debt is
    still owed. A refused message consumes nothing.
    """

    __slots__ = ("_burst", "_count", "_interval", "_tat", "_window_end")

    def __init__(self, interval: float, burst: int) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be > 0 and burst >= 1")
        self._interval = interval
        self._burst = burst
        self._tat = -math.inf
        self._window_end = -math.inf
        self._count = 0

    def admit(self, now: float) -> bool:
        if self._tat <= now + _EPSILON:  # owes nothing: a new burst may start
            self._window_end = now + self._interval
            self._count = 0
            self._tat = now
        elif now >= self._window_end or self._count >= self._burst:
            return False
        self._count += 1
        self._tat += self._interval
        return True

    def idle(self, now: float) -> bool:
        """Owes nothing (the simulator may forget this pair)."""
        return self._tat <= now + _EPSILON
