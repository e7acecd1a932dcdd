"""Timers: many sleeping deadlines served by one task.

An idle number actor still has things to do at set times (log in again a day
before its token expires, re-read a refused Cloud token, probe its endpoints).
A sleeping task per actor and per chore costs kilobytes of trio machinery each;
here every such deadline is one heap entry, and one task sleeps until the
earliest. Callbacks run on that task and must be quick: they only wake their
owner (which then does the real work in a task of its own). One that raises is
logged, and the others still fire.

Time is trio time, so ``MockClock`` drives it like any ``trio.sleep``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import final

import structlog
import trio

log = structlog.get_logger()


@final
class Timer:
    """One scheduled call; ``cancel()`` is idempotent and O(1) (the heap entry is skipped later)."""

    __slots__ = ("_callback", "_timers", "deadline")

    def __init__(self, timers: Timers, deadline: float, callback: Callable[[], None]) -> None:
        self._timers = timers
        self.deadline = deadline
        self._callback: Callable[[], None] | None = callback

    @property
    def active(self) -> bool:
        return self._callback is not None

    def cancel(self) -> None:
        if self._callback is not None:
            self._callback = None
            self._timers._cancelled += 1

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


@final
class Timers:
    """Runs callbacks at trio times; ``run()`` is the one task that waits for all of them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # FIFO among equal deadlines
        self._sleep: trio.CancelScope | None = None  # the run task's current wait
        self._cancelled = 0  # cancelled entries still in the heap

    def __len__(self) -> int:
        """Heap entries (cancelled ones included until they come due or are compacted)."""
        return len(self._heap)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` (on the timers' task) once trio time reaches ``deadline``."""
        timer = Timer(self, deadline, callback)
        if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
            self._compact()
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        if self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline
        return timer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire timers as they come due, until cancelled."""
        task_status.started()
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                timer = heapq.heappop(heap)[2]
                if not timer.active:
                    self._cancelled -= 1
                    continue
                try:
                    timer._fire()
                except Exception as exc:  # a bug in one owner's callback must not stop everyone's timers
                    log.error("timer.callback_failed", exc_info=exc)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                self._sleep = sleep
                try:
                    await trio.sleep_forever()
                finally:
                    self._sleep = None

    def _compact(self) -> None:
        """Drop cancelled entries (every reschedule leaves one behind), in place: ``run`` holds the list."""
        self._heap[:] = [entry for entry in self._heap if entry[2].active]
        heapq.heapify(self._heap)
        self._cancelled = 0
