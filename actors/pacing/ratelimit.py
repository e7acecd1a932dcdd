"""Per-number send pacing: a token bucket in GCRA form.

GCRA keeps one number, the theoretical arrival time (TAT) of the next slot, so
``acquire`` reserves a slot and sleeps until it: waiters are served FIFO, there
is no polling, and under ``MockClock`` the sleeps are exact (a "compute the
deficit, sleep, re-check" loop can spin forever on a sub-ULP deficit).

The WhatsApp side runs its own bucket, and requests reach it later than we
released them by a varying network delay. If we used the full burst we would
sit exactly at its limit and any jitter would turn into 429s, so one slot of
the burst is kept back as headroom; the sustained rate is unchanged.

When the server still says 429, its real limit is below ours: ``throttled()``
cuts the rate multiplicatively (at most once per ``cooldown``, since the sends
already in flight come back 429 together) and bursts stop; the rate then grows
back additively with time, so the number settles just under the real limit
(AIMD, like TCP congestion control) instead of hammering it.
"""

from __future__ import annotations

import math
from typing import final

import trio


@final
class TokenBucket:
    """``rate`` sends per second with bursts of up to ``burst`` (minus ``headroom``)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        headroom: int = 1,
        decrease: float = 0.8,
        recovery: float = 0.02,
        min_rate: float = 0.05,
    ) -> None:
        """``decrease``: rate factor per 429; ``recovery``: fraction of ``rate`` regained per second."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        if not 0 < decrease < 1 or recovery <= 0:
            raise ValueError("decrease must be in (0, 1) and recovery > 0")
        self._tat = trio.current_time()
        self._decrease = decrease
        self._recovery = recovery
        self._min_rate = min_rate
        self.configure(rate, burst, headroom=headroom)

    def configure(self, rate: float, burst: int, *, headroom: int = 1) -> None:
        """Change the limits in place (live reload); forgets any slow-down."""
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = max(0, burst - 1 - headroom) * self._interval
        self._slow_rate: float | None = None  # rate right after the last cut; None: not slowed
        self._slowed_at = -math.inf

    def current_rate(self) -> float:
        """The rate in force now: ``rate``, or a cut rate recovering toward it."""
        if self._slow_rate is None:
            return self.rate
        now = trio.current_time()
        recovered = self._slow_rate + self._recovery * self.rate * (now - self._slowed_at)
        if recovered >= self.rate:
            self._slow_rate = None
            return self.rate
        return recovered

    def throttled(self) -> bool:
        """The server answered 429: cut the rate (once per cooldown). True if it was cut."""
        now = trio.current_time()
        current = self.current_rate()
        if now - self._slowed_at < max(1.0, 1.0 / current):
            return False
        self._slow_rate = max(self._min_rate, min(current, self.rate) * self._decrease)
        self._slowed_at = now
        # Whatever was reserved at the old pace is pushed back to the new one.
        self._tat = max(self._tat, now)
        return True

    async def acquire(self) -> None:
        """Wait for a slot. A cancelled waiter forfeits its slot (the bucket stays conservative)."""
        now = trio.current_time()
        tat = max(self._tat, now)
        if self._slow_rate is None:
            self._tat = tat + self._interval
            due = tat - self._tolerance
        else:
            # Slowed down: no bursts until the rate has recovered.
            self._tat = tat + 1.0 / self.current_rate()
            due = tat
        if due <= now:
            # A slot is free now (bursts, unthrottled numbers): a bare checkpoint costs
            # a quarter of a sleep_until, which sets up a cancel scope and a timer.
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(due)

    def delay_next(self, seconds: float) -> None:
        """Push every future slot back (a Retry-After from the server)."""
        self._tat = max(self._tat, trio.current_time() + self._tolerance) + seconds
