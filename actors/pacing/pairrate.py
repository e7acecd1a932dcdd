"""Meta's pair rate limit, kept on our side: messages per (number, recipient).

Cloud API (reference 2.5) allows one message every 6 s to the same user; bursts of
up to 45 in 6 s pass, but they *borrow* from future quota: after n messages in a
burst the next one waits about n x 6 s (a burst of 20 means about 2 minutes).
Each recipient gets a cell: the theoretical arrival time (TAT) at which its debt
is repaid (every message pushes it one interval further) and the burst window it
opened when it owed nothing. Inside the window up to ``burst`` messages go at
once; after it the recipient waits for its TAT. (A plain GCRA let one more
through every interval after a burst while Meta still counted the debt: a chatty
conversation drew 131056 and then minutes of 4^X back-off.)

``margin`` stands for the difference between our clock and Meta's: a message is
counted here when the actor admits it and reaches Meta a little later, not always
equally later. The window closes ``margin`` early and a debt counts as repaid
``margin`` late, which costs a recipient kept busy at exactly one message per
interval margin/interval of that rate (under 2 % at 0.1 s on 6 s). A difference
beyond the margin costs one 131056 and a 1 s retry (see ``penalize``), not more.

The actor asks ``ready_at`` before it sends and parks a recipient that must wait,
so the wait never holds a send slot and other recipients keep flowing.

When Meta still says 131056 (a restart forgot a debt, or the clocks drifted
further than the margin), ``penalize`` gives back the refused message's share,
ends the recipient's burst (Meta says none is left) and applies Meta's back-off:
no retry before 4^X seconds, X starting at 0 and rising with each refusal in a
row, reset by a success; the retry also waits for the debt as we count it.
"""

from __future__ import annotations

import math
from typing import Final, final

import attrs

MAX_EXPONENT: Final = 6  # 4^6 s is about 68 minutes: beyond that the message should rather fail
SKEW_MARGIN: Final = 0.1  # seconds: see the module docstring
# Sums of float times are not exact (5.8 + 0.1 + 0.1 == 5.999999999999999): a debt within this of being
# repaid is repaid, as Meta's model in the simulator (ratelimit.PairGate) counts it.
_EPSILON: Final = 1e-9
_SWEEP_EVERY: Final = 4096


@attrs.define(slots=True)
class _Cell:
    tat: float = -math.inf  # when the recipient owes nothing any more (our count)
    window_end: float = -math.inf  # the open burst window closes here
    in_window: int = 0  # messages sent in that window
    refusals: int = 0
    not_before: float = 0.0


@final
class PairLimiter:
    """Bursts of up to ``burst`` to one recipient within ``interval``, each owing ``interval``."""

    def __init__(self, interval: float, burst: int, margin: float | None = None) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be > 0 and burst >= 1")
        if margin is None:
            margin = min(SKEW_MARGIN, interval / 4)
        if not 0 <= margin <= interval / 2:
            raise ValueError("margin must be between 0 and half the interval")
        self.interval = interval
        self.burst = burst
        self.margin = margin
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
        at = now if self._bursting(cell, now) or self._repaid(cell, now) else cell.tat + self.margin
        return max(at, cell.not_before)

    def take(self, recipient: str, now: float) -> None:
        """A message to ``recipient`` leaves now (call only once ``ready_at <= now``)."""
        cell = self._cells.get(recipient)
        if cell is None:
            cell = self._cells[recipient] = _Cell()
        if self._repaid(
            cell, now
        ):  # owes nothing: a new burst (as Meta counts, even at a window's last instant)
            cell.window_end = now + self.interval - self.margin
            cell.in_window = 0
        cell.in_window += 1
        cell.tat = max(cell.tat, now) + self.interval
        self._takes += 1
        if self._takes % _SWEEP_EVERY == 0:
            self._sweep(now)

    def penalize(self, recipient: str, now: float) -> float:
        """Meta refused the last message taken with 131056: returns the wait before the next try."""
        cell = self._cells.get(recipient)
        if cell is None:  # a debt we did not count (a restart forgot it)
            cell = self._cells[recipient] = _Cell()
        else:
            cell.tat -= self.interval  # Meta did not count the refused message
        cell.window_end = -math.inf  # and has no burst left for this recipient
        wait = float(4 ** min(cell.refusals, MAX_EXPONENT))
        cell.refusals += 1
        cell.not_before = now + wait
        self.penalties += 1
        return wait

    def succeeded(self, recipient: str) -> None:
        cell = self._cells.get(recipient)
        if cell is not None:
            cell.refusals = 0

    def _repaid(self, cell: _Cell, now: float) -> bool:
        return now + _EPSILON >= cell.tat + self.margin

    def _bursting(self, cell: _Cell, now: float) -> bool:
        return now < cell.window_end and cell.in_window < self.burst

    def _sweep(self, now: float) -> None:
        """Forget recipients who owe nothing (a new cell behaves the same)."""
        stale = [
            r
            for r, c in self._cells.items()
            if self._repaid(c, now) and c.not_before <= now and not c.refusals
        ]
        for recipient in stale:
            del self._cells[recipient]
