"""Wall-clock time, injectable.

Deadlines inside the daemon use ``trio.current_time()`` so ``MockClock`` drives
them. Some values are wall-clock by nature (Twilio ``date_created``, the
On-Premises API's ``expires_after``, the 24 h window). They come from a
``WallClock`` object so tests (and the simulator) can move them with trio's
clock instead of waiting days.
"""

from __future__ import annotations

import time
from typing import Protocol, final

import trio


class WallClock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


@final
class SystemWallClock:
    """The machine's clock: production."""

    def now(self) -> float:
        return time.time()


@final
class TrioWallClock:
    """Wall time that advances with trio's clock (so with ``MockClock``), plus manual jumps.

    Anchored when created: ``now() == start + (trio.current_time() - t0) + offset``.
    Must be created inside a trio run.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = time.time() if start is None else start
        self._t0 = trio.current_time()
        self._offset = 0.0

    def now(self) -> float:
        return self._start + (trio.current_time() - self._t0) + self._offset

    def advance(self, seconds: float) -> None:
        """Jump the wall clock forward (e.g. 7 days) without touching trio's clock."""
        if seconds < 0:
            raise ValueError("a wall clock only moves forward")
        self._offset += seconds
