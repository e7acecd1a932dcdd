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
