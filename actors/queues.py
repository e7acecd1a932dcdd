"""SendQueues: which of a number's queued messages may go next. A data structure, no I/O.

One FIFO per recipient, plus the recipients whose head message may go now (the
*ready line*, FIFO), those with a send in flight (*busy*), and those *parked*
until a time (Meta's pair rate, the tier budget, storage back-off), in a heap.
A queued recipient is in at most one of these at a time, so it has at most one
send in flight: its messages go out in acceptance order, while other recipients
proceed concurrently. After each send the recipient rejoins the back of the ready
line, so one busy recipient cannot starve the others.

The buffers for the ready line, the busy set and the queued seqs are made on
demand and let go when the queues empty: an idle number holds none of them.
Times are the caller's (trio time in the actor); nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable
from typing import final

import attrs

from dispatcher.core.models import MessageRecord


@attrs.define(eq=False, slots=True)
class Pending:
    """One queued channel message: part ``part`` of outbox entry ``seq``."""

    seq: int
    sid: str
    to_number: str
    record: MessageRecord | None = None  # given by notify(); loaded lazily after recovery
    attempts: int = 0
    holds_slot: bool = True  # False while backing off (the in-flight slot is lent to others)
    part: int = 0  # which channel message of the record (segments, media items)


@final
class SendQueues:
    """The per-recipient FIFOs of one number, its ready line and its parked recipients."""

    __slots__ = ("_busy", "_known", "_parked", "_parked_seq", "_queues", "_ready", "_recovered_upto")

    def __init__(self) -> None:
        self._queues: dict[str, deque[Pending]] = {}
        # Recipients whose head message can go now, FIFO; made on demand (an idle actor has none).
        self._ready: deque[str] | None = None
        # Recipients with a send in flight, and the seqs queued: made on demand like the ready line.
        self._busy: set[str] | None = None
        self._known: set[int] | None = None
        self._recovered_upto = 0  # recovery saw every committed seq up to here
        self._parked: list[tuple[float, int, str]] = []  # (time, tiebreak, recipient)
        self._parked_seq = itertools.count()

    def add(self, item: Pending) -> bool:
        """Queue ``item`` behind its recipient's earlier messages, once: a seq already queued,
        or at or below what recovery saw, is ignored. True if the recipient just became ready
        (it had nothing queued and no send in flight)."""
        if item.seq <= self._recovered_upto:
            return False
        known = self._known
        if known is None:
            known = self._known = set()
        elif item.seq in known:
            return False
        known.add(item.seq)
        queue = self._queues.get(item.to_number)
        if queue is None:
            queue = self._queues[item.to_number] = deque()
        queue.append(item)
        if len(queue) == 1 and (self._busy is None or item.to_number not in self._busy):
            self._make_ready(item.to_number)
            return True
        return False

    def recovered(self) -> None:
        """Everything committed so far is queued: seqs are allocated in commit order, so a later
        ``add`` at or below the highest queued seq is for a message already queued (or sent)."""
        self._recovered_upto = max(self._known or (), default=0)

    def __bool__(self) -> bool:
        """Any message queued (ready, in flight or parked)."""
        return bool(self._queues)

    def has_ready(self) -> bool:
        return bool(self._ready)

    def pop_ready(self) -> str:
        """The recipient at the front of the ready line, off it: ``begin`` its send, or ``park`` it."""
        assert self._ready
        return self._ready.popleft()

    def begin(self, recipient: str) -> Pending:
        """A send of ``recipient``'s head message starts: it is busy until ``done`` or ``retry_at``."""
        busy = self._busy
        if busy is None:
            busy = self._busy = set()
        busy.add(recipient)
        return self._queues[recipient][0]

    def done(self, recipient: str) -> bool:
        """The busy ``recipient``'s head message is done with (sent, failed or dropped): it leaves
        the queue. True if the recipient has more and is back on the ready line."""
        assert self._busy is not None and self._known is not None  # made when it was queued
        self._busy.discard(recipient)
        queue = self._queues[recipient]
        self._known.discard(queue.popleft().seq)
        if queue:
            self._make_ready(recipient)
            return True
        del self._queues[recipient]
        return False

    def retry_at(self, recipient: str, when: float) -> None:
        """The busy ``recipient``'s head message goes again at ``when``: parked until then."""
        assert self._busy is not None
        self._busy.discard(recipient)
        self.park(recipient, when)

    def park(self, recipient: str, when: float) -> None:
        """Keep ``recipient`` (just taken off the ready line, or busy no more) aside until ``when``."""
        heapq.heappush(self._parked, (when, next(self._parked_seq), recipient))

    def unpark_due(self, now: float) -> bool:
        """Recipients parked until ``now`` or earlier rejoin the ready line, earliest first.
        True if the ready line has a recipient (one call a send, for the send loop)."""
        parked = self._parked
        while parked and parked[0][0] <= now:
            self._make_ready(heapq.heappop(parked)[2])
        return bool(self._ready)

    def unpark_all(self) -> bool:
        """Every parked recipient rejoins the ready line now, earliest first (a limit was raised:
        each is admitted again or parked again). True if any was parked."""
        parked = self._parked
        if not parked:
            return False
        while parked:
            self._make_ready(heapq.heappop(parked)[2])
        return True

    def next_unpark(self) -> float:
        """When the first parked recipient is due (``math.inf``: none is parked)."""
        return self._parked[0][0] if self._parked else math.inf

    def release(self) -> None:
        """Let the scheduling buffers go (only while nothing is queued: an idle number)."""
        assert not self._queues
        self._ready = self._busy = self._known = None

    def _make_ready(self, recipient: str) -> None:
        ready = self._ready
        if ready is None:
            ready = self._ready = deque()
        ready.append(recipient)

    def pending(self) -> int:
        """Messages queued, in flight or parked included."""
        return sum(len(queue) for queue in self._queues.values())

    def in_flight(self) -> int:
        """Recipients with a send in flight."""
        return len(self._busy) if self._busy else 0

    def parked(self) -> int:
        return len(self._parked)

    def ready(self) -> Iterable[str]:
        """The ready line, front first (for tests and statistics)."""
        return tuple(self._ready or ())

    def buffers(self) -> int:
        """How many of the on-demand buffers exist now (0 when idle and released)."""
        return sum(buffer is not None for buffer in (self._ready, self._busy, self._known))


__all__ = ["Pending", "SendQueues"]
