"""SendQueues: which of a number's loaded messages may go next. A data structure, no I/O.

The queues hold the number's *window*: at most ``window`` of its pending messages
(the rest stay in the LMDB outbox; ``actors.backlog`` loads them in order). One
FIFO per recipient, plus the recipients whose head message may go now (the
*ready line*, FIFO), those with a send in flight (*busy*), and those *parked*
until a time (Meta's pair rate, the tier budget, backoff), in a heap. A queued
recipient is in at most one of these at a time, so it has at most one send in
flight: its messages go out in acceptance order, while other recipients proceed
concurrently. After each send the recipient rejoins the back of the ready line,
so one busy recipient cannot starve the others.

No recipient can fill the window: it holds at most ``per_recipient`` messages of
one recipient, and a parked recipient keeps only its head. The recipient's later
messages stay on disk and it is *deferred*: the queues remember the seq of its
first message left there (its cursor), the backlog skips its entries when it
scans the number's outbox, and reloads them from the recipient's own index once
the ones loaded are done (the recipient is then *starved* until it is refilled).
So a recipient's later message is never loaded before an earlier one, and a
waiting recipient costs one slot of the window.

The buffers for the ready line and the busy set are made on demand and let go
when the queues empty: an idle number holds none of them. Times are the
caller's (trio time in the actor); nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable
from typing import Final, final

import attrs

from dispatcher.core.models import MessageRecord

DEFAULT_WINDOW: Final = 4096  # messages a number holds in memory at most (its in-flight sends among them)
MIN_WINDOW: Final = 16


def recipient_share(window: int) -> int:
    """The most messages of one recipient a window of ``window`` holds: a 128th of it, at least 4.

    One recipient sends one message at a time, so more of its messages loaded
    only save index reads (one per ``recipient_share`` sends)."""
    return max(4, window // 128)


@attrs.define(eq=False, slots=True)
class Pending:
    """One queued channel message: part ``part`` of outbox entry ``seq``."""

    seq: int
    sid: str
    to_number: str
    record: MessageRecord | None = None  # given by notify(); loaded lazily when it came from disk
    attempts: int = 0
    holds_slot: bool = True  # False while backing off (the in-flight slot is lent to others)
    part: int = 0  # which channel message of the record (segments, media items)


@final
class SendQueues:
    """The per-recipient FIFOs of one number's window, its ready line, its parked and deferred recipients."""

    __slots__ = (
        "_busy",
        "_deferred",
        "_loaded",
        "_parked",
        "_parked_seq",
        "_queues",
        "_ready",
        "_starved",
        "per_recipient",
        "window",
    )

    def __init__(self, window: int = DEFAULT_WINDOW, per_recipient: int | None = None) -> None:
        if window < MIN_WINDOW:
            raise ValueError(f"window must be at least {MIN_WINDOW}, not {window}")
        self.window = window
        self.per_recipient = recipient_share(window) if per_recipient is None else per_recipient
        self._queues: dict[str, deque[Pending]] = {}
        self._loaded = 0  # messages in the queues (the window's use)
        # Recipients whose head message can go now, FIFO; made on demand (an idle actor has none).
        self._ready: deque[str] | None = None
        # Recipients with a send in flight: made on demand like the ready line.
        self._busy: set[str] | None = None
        self._parked: list[tuple[float, int, str]] = []  # (time, tiebreak, recipient)
        self._parked_seq = itertools.count()
        # Recipients with messages left on disk behind their loaded ones: the seq of the first.
        self._deferred: dict[str, int] = {}
        # Deferred recipients with nothing loaded (and not parked nor busy): to refill from disk.
        self._starved: list[str] = []

    # -- loading (the backlog) ------------------------------------------------------

    def offer(self, item: Pending) -> bool:
        """Load ``item``, the next message of the number's outbox in seq order, unless its
        recipient is deferred (its messages come from its own index) or has its share of the
        window (it becomes deferred from ``item`` on). True if the recipient just became ready."""
        recipient = item.to_number
        if recipient in self._deferred:
            return False
        queue = self._queues.get(recipient)
        if queue is not None and len(queue) >= self.per_recipient:
            self._deferred[recipient] = item.seq
            return False
        return self.add(item)

    def add(self, item: Pending) -> bool:
        """Queue ``item`` behind its recipient's loaded messages (the caller keeps seq order).
        True if the recipient just became ready (it had nothing queued and no send in flight)."""
        queue = self._queues.get(item.to_number)
        if queue is None:
            queue = self._queues[item.to_number] = deque()
        queue.append(item)
        self._loaded += 1
        if len(queue) == 1 and (self._busy is None or item.to_number not in self._busy):
            self._make_ready(item.to_number)
            return True
        return False

    def room(self) -> int:
        """How many more messages the window takes."""
        return self.window - self._loaded

    def loaded(self) -> int:
        """Messages in the window: queued, in flight or parked."""
        return self._loaded

    def deferred(self, recipient: str) -> int | None:
        """The seq of ``recipient``'s first message left on disk (None: none is)."""
        return self._deferred.get(recipient)

    def deferred_count(self) -> int:
        return len(self._deferred)

    def starved(self) -> bool:
        """Some deferred recipient has nothing loaded: ``take_starved`` and refill it."""
        return bool(self._starved)

    def take_starved(self) -> list[str]:
        starved, self._starved = self._starved, []
        return starved

    def starve(self, recipients: list[str]) -> None:
        """``take_starved`` recipients the window had no room for: refill them later."""
        self._starved.extend(recipients)

    def refilled(self, recipient: str, items: list[Pending], cursor: int | None) -> None:
        """``recipient``'s next messages from its index (seq order), and where its rest starts
        (None: nothing of it is left behind the outbox scan, it is no longer deferred)."""
        if cursor is None:
            self._deferred.pop(recipient, None)
        else:
            self._deferred[recipient] = cursor
        for item in items:
            self.add(item)

    # -- scheduling (the send loop) -------------------------------------------------

    def __bool__(self) -> bool:
        """Any message loaded (ready, in flight or parked)."""
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
        assert self._busy is not None  # made when its send began
        self._busy.discard(recipient)
        queue = self._queues[recipient]
        queue.popleft()
        self._loaded -= 1
        if queue:
            self._make_ready(recipient)
            return True
        del self._queues[recipient]
        if recipient in self._deferred:
            self._starved.append(recipient)
        return False

    def retry_at(self, recipient: str, when: float) -> None:
        """The busy ``recipient``'s head message goes again at ``when``: parked until then."""
        assert self._busy is not None
        self._busy.discard(recipient)
        self.park(recipient, when)

    def park(self, recipient: str, when: float) -> None:
        """Keep ``recipient`` (just taken off the ready line, or busy no more) aside until ``when``.
        It keeps its head message; the others go back to disk (deferred) until it is done with it."""
        queue = self._queues[recipient]
        if len(queue) > 1:
            head = queue.popleft()
            self._deferred[recipient] = queue[0].seq
            self._loaded -= len(queue)
            queue.clear()
            queue.append(head)
        elif recipient not in self._deferred:
            # Nothing else loaded: what a scan meets of it while it waits stays on disk too.
            self._deferred[recipient] = queue[0].seq + 1
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
        """Let the scheduling buffers go (only while nothing is loaded: an idle number)."""
        assert not self._queues
        self._ready = self._busy = None

    def _make_ready(self, recipient: str) -> None:
        ready = self._ready
        if ready is None:
            ready = self._ready = deque()
        ready.append(recipient)

    def in_flight(self) -> int:
        """Recipients with a send in flight."""
        return len(self._busy) if self._busy else 0

    def parked(self) -> int:
        return len(self._parked)

    def ready(self) -> Iterable[str]:
        """The ready line, front first (for tests and statistics)."""
        return tuple(self._ready or ())

    def queued(self, recipient: str) -> tuple[int, ...]:
        """The seqs of ``recipient``'s loaded messages, head first (for tests)."""
        return tuple(item.seq for item in self._queues.get(recipient, ()))

    def buffers(self) -> int:
        """How many of the on-demand buffers exist now (0 when idle and released)."""
        return sum(buffer is not None for buffer in (self._ready, self._busy))


__all__ = ["DEFAULT_WINDOW", "MIN_WINDOW", "Pending", "SendQueues", "recipient_share"]
