"""Per-number send pacing: a token bucket in GCRA form.

GCRA keeps one number, the theoretical arrival time (TAT) of the next slot, so
``acquire`` reserves a slot and sleeps until it: waiters are served FIFO, there
is no polling, and under ``MockClock`` the sleeps are exact (a "compute the
deficit, sleep, re-check" loop can spin forever on a sub-ULP deficit).

The WhatsApp side runs its own bucket, and requests reach it later than we
released them by a varying network delay. If we used the full burst we would
sit exactly at its limit and any jitter would turn into 429s, so one slot of
the burst is kept back as headroom; the sustained rate is unchanged.
"""

from __future__ import annotations

from typing import final

import trio


@final
class TokenBucket:
    """``rate`` sends per second with bursts of up to ``burst`` (minus ``headroom``)."""

    def __init__(self, rate: float, burst: int, *, headroom: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self._tat = trio.current_time()
        self.configure(rate, burst, headroom=headroom)

    def configure(self, rate: float, burst: int, *, headroom: int = 1) -> None:
        """Change the limits in place (live reload, adaptive slow-down)."""
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = max(0, burst - 1 - headroom) * self._interval

    async def acquire(self) -> None:
        """Wait for a slot. A cancelled waiter forfeits its slot (the bucket stays conservative)."""
        now = trio.current_time()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        await trio.sleep_until(tat - self._tolerance)

    def delay_next(self, seconds: float) -> None:
        """Push every future slot back (a Retry-After from the server)."""
        self._tat = max(self._tat, trio.current_time() + self._tolerance) + seconds
