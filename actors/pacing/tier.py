"""Meta's messaging tier, kept on our side: unique business-initiated recipients per rolling 24 h.

A message to a customer whose 24-hour service window is closed is
business-initiated; Meta lets a number reach only ``limit`` distinct such
recipients in any 24 h (250 / 1K / 10K / 100K / unlimited). A recipient counts
from the first such message for 24 h; more messages to it in that time are
free. When the budget is spent, new recipients wait (their messages stay
queued in the outbox) until the oldest count leaves the window.

Counts are durable (``tier`` DB, key ``number NUL recipient``, value the wall
time it was counted) so a restart does not hand out a fresh budget. The actor
reserves in memory synchronously (``admit``) and persists with its send
(``persist``), so concurrent sends cannot overspend.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Final, final

import attrs

from dispatcher.core import window
from dispatcher.core.store import Store, WriteTxn, number_key

WINDOW: Final = 24 * 3600.0
_TIME: Final = struct.Struct(">d")


@attrs.frozen
class Admission:
    """``wait`` > 0: try again that many (wall) seconds later. ``new``: persist before sending."""

    wait: float = 0.0
    new: bool = False


ADMITTED: Final = Admission()


@final
class TierBudget:
    def __init__(self, store: Store, number: str, limit: int | None) -> None:
        """``limit`` None: unlimited (nothing is counted)."""
        self._store = store
        self.number = number
        self.limit = limit
        self._counted: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._expired: list[str] = []
        self.waits = 0  # admissions refused because the budget was spent

    def load(self, now: float) -> int:
        """Read this number's counts from LMDB (the actor calls it on every start)."""
        self._counted.clear()
        self._order.clear()
        self._expired.clear()
        prefix = number_key(self.number)
        rows: list[tuple[float, str]] = []
        for key, value in self._store.scan(b"tier", prefix):
            recipient = key[len(prefix) :].decode()
            at = float(_TIME.unpack(value)[0])
            if now - at < WINDOW:
                rows.append((at, recipient))
            else:
                self._expired.append(recipient)
        rows.sort()
        for at, recipient in rows:
            self._counted[recipient] = at
            self._order.append((at, recipient))
        return len(rows)

    def set_limit(self, limit: int | None) -> bool:
        """Meta changed the number's messaging tier (None: unlimited). True if more recipients
        may be admitted now than before (those waiting for the budget should try again)."""
        before, self.limit = self.limit, limit
        if limit is None:
            return before is not None
        return before is not None and limit > before

    @property
    def used(self) -> int:
        return len(self._counted)

    def admit(self, recipient: str, now: float) -> Admission:
        """May a message to ``recipient`` leave at wall time ``now``?"""
        if self.limit is None:
            return ADMITTED
        self._expire(now)
        if recipient in self._counted:
            return ADMITTED
        if window.is_open(self._store, self.number, recipient, now):
            return ADMITTED  # a reply inside the customer's service window is not business-initiated
        if len(self._counted) >= self.limit:
            self.waits += 1
            return Admission(wait=max(self._order[0][0] + WINDOW - now, 0.001))
        self._counted[recipient] = now
        self._order.append((now, recipient))
        return Admission(new=True)

    def persist(self, recipient: str) -> Callable[[WriteTxn], None]:
        """The write recording ``recipient``'s count (and dropping expired ones)."""
        at = self._counted.get(recipient)
        expired, self._expired = self._expired, []
        number = self.number

        def write(txn: WriteTxn) -> None:
            for old in expired:
                txn.delete(b"tier", number_key(number, old.encode()))
            if at is not None:
                txn.put(b"tier", number_key(number, recipient.encode()), _TIME.pack(at))

        return write

    def uncount(self, recipient: str) -> None:
        """Take back ``admit``'s count of a new recipient whose ``persist`` could not commit (no
        send went out): its next ``admit`` counts it again, and that count is persisted."""
        self._counted.pop(recipient, None)  # its _order entry no longer matches: _expire skips it

    def _expire(self, now: float) -> None:
        while self._order and now - self._order[0][0] >= WINDOW:
            at, recipient = self._order.popleft()
            if self._counted.get(recipient) == at:
                del self._counted[recipient]
                self._expired.append(recipient)
