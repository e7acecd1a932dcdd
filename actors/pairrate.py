"""Meta's pair rate limit, kept on our side: messages per (number, recipient).

Cloud API allows about one message every 6 s to the same user, with bursts of
up to 45 that borrow from the future (131056 beyond that). Each recipient gets
a GCRA cell (one float: the theoretical arrival time of its next message). The
actor asks ``ready_at`` before it sends and parks a recipient that must wait,
so the wait never holds a send slot and other recipients keep flowing.

When Meta still says 131056 (its clock and ours differ), ``penalize`` applies
Meta's back-off: 4^X seconds, X starting at 0 and rising with each refusal in
a row, reset by a success.
"""

from __future__ import annotations

from typing import Final, final

import attrs

MAX_EXPONENT: Final = 6  # 4^6 s is about 68 minutes: beyond that the message should rather fail
_SWEEP_EVERY: Final = 4096


@attrs.define(slots=True)
class _Cell:
    tat: float
    refusals: int = 0
    not_before: float = 0.0


@final
class PairLimiter:
    """``burst`` messages at once to one recipient, then one per ``interval`` seconds."""

    def __init__(self, interval: float, burst: int) -> None:
        if interval < 0 or burst < 1:
            raise ValueError("interval must be >= 0 and burst >= 1")
        self.interval = interval
        self.burst = burst
        self._tolerance = (burst - 1) * interval
        self._cells: dict[str, _Cell] = {}
        self._takes = 0
        self.penalties = 0

    def __len__(self) -> int:
        return len(self._cells)

    def ready_at(self, recipient: str, now: float) -> float:
        """The earliest time ``recipient`` may get its next message (``<= now``: at once)."""
        cell = self._cells.get(recipient)
        if cell is None:
            return now
        return max(now, cell.tat - self._tolerance, cell.not_before)

    def take(self, recipient: str, now: float) -> None:
        """A message to ``recipient`` leaves now (call only once ``ready_at <= now``)."""
        cell = self._cells.get(recipient)
        if cell is None:
            self._cells[recipient] = _Cell(now + self.interval)
        else:
            cell.tat = max(cell.tat, now) + self.interval
        self._takes += 1
        if self._takes % _SWEEP_EVERY == 0:
            self._sweep(now)

    def penalize(self, recipient: str, now: float) -> float:
        """Meta refused with 131056: wait 4^X s before the next try; returns that wait."""
        cell = self._cells.get(recipient)
        if cell is None:
            cell = self._cells[recipient] = _Cell(now)
        wait = float(4 ** min(cell.refusals, MAX_EXPONENT))
        cell.refusals += 1
        cell.not_before = now + wait
        self.penalties += 1
        return wait

    def succeeded(self, recipient: str) -> None:
        cell = self._cells.get(recipient)
        if cell is not None:
            cell.refusals = 0

    def _sweep(self, now: float) -> None:
        """Forget recipients whose cell is back to full burst (they behave as new)."""
        stale = [r for r, c in self._cells.items() if c.tat <= now and c.not_before <= now and not c.refusals]
        for recipient in stale:
            del self._cells[recipient]
