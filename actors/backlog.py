"""Backlog: a number's window of pending messages, loaded in order from its LMDB outbox.

The queues (``actors.queues``) hold at most a window of the number's pending
messages; everything else stays in the outbox, whatever its size (Postfix's
active queue over its incoming and deferred queues). The backlog keeps a cursor
over the outbox, the seq of the next entry it has not looked at: every entry
below it is loaded, done, or belongs to a *deferred* recipient, whose entries
come from the ``outbox_to`` index (``dispatcher.core.outbox``) from the
recipient's own cursor. So:

* start-up reads only the window's worth (``recover``), whatever the backlog;
* a message committed while the window has room goes straight in with its
  record (``notified``: no read); one committed while it is full is only counted,
  and loaded by a later scan (``top_up``), in seq order;
* a recipient's later message is never loaded before an earlier one: the scan
  skips a deferred recipient's entries, and its refill reads its index from its
  cursor up to the scan's cursor only (what lies beyond, the scan will meet).

Reads run inline on the trio thread (~1-2 us an entry); a scan looks at no more
than ``SCAN_LIMIT`` entries at a time, so skipping a long run of a deferred
recipient's entries never holds the event loop.
"""

from __future__ import annotations

from typing import Final, final

from actors.queues import Pending, SendQueues
from dispatcher.core import outbox
from dispatcher.core.models import MessageRecord, entry_decoder
from dispatcher.core.store import SEQ_MARK, Store, number_key, seq_key

SCAN_LIMIT: Final = 8192  # outbox entries one scan looks at, at most
EARLY_LIMIT: Final = (
    1024  # notified records kept while an earlier notify is due (trio may wake them out of order)
)


@final
class Backlog:
    """The cursor of one number's window over its outbox."""

    __slots__ = ("_batch", "_early", "_last", "_next", "_number", "_prefix", "_store")

    def __init__(self, store: Store, number: str) -> None:
        self._store = store
        self._number = number
        self._prefix = number_key(number)
        self._next = 1  # the next outbox seq the scan looks at
        self._last = 0  # the highest seq known to be committed
        self._batch = 1  # free slots worth a scan (an eighth of the window)
        # Records notified ahead of the cursor (a later commit's waiter woke first), by seq.
        self._early: dict[int, Pending] = {}

    def recover(self, queues: SendQueues) -> int:
        """Start over from the outbox's first entry and load a window's worth; returns how many."""
        self._early.clear()
        self._batch = max(1, queues.window // 8)
        first = next(self._store.scan(b"outbox", self._prefix), None)
        self._last = self._last_seq()
        self._next = self._last + 1 if first is None else int.from_bytes(first[0][len(self._prefix) :], "big")
        self.top_up(queues)
        return queues.loaded()

    def notified(self, queues: SendQueues, seq: int, record: MessageRecord, part: int) -> bool:
        """Entry ``seq`` (part ``part`` of ``record``) was committed. Never reads: the entry is
        loaded now if it is the next one and the window has room, else found by ``top_up``.
        True if a recipient became ready."""
        if seq < self._next:
            return False  # loaded by a scan already (or done)
        if seq > self._last:
            self._last = seq
        if queues.room() <= 0:
            return False
        item = Pending(seq, record.sid, record.to_number, record, part=part)
        if seq > self._next:
            if len(self._early) < EARLY_LIMIT:
                self._early[seq] = item
            return False
        ready = queues.offer(item)
        self._next = seq + 1
        early = self._early
        while early and queues.room() > 0:
            later = early.pop(self._next, None)
            if later is None:
                break
            ready = queues.offer(later) or ready
            self._next += 1
        return ready

    def wanted(self, queues: SendQueues) -> bool:
        """Whether ``top_up`` has something to load now."""
        if queues.starved():
            return queues.room() > 0
        behind = self._last - self._next + 1
        return behind > 0 and queues.room() >= min(self._batch, behind)

    def top_up(self, queues: SendQueues) -> bool:
        """Refill starved recipients from their index, then load entries past the cursor until the
        window is full. True if a recipient became ready."""
        ready = False
        if queues.starved():
            ready = self._refill(queues)
        if self._next <= self._last and queues.room() > 0:
            ready = self._scan(queues) or ready
        return ready

    def more(self) -> bool:
        """Entries past the cursor remain (the window was full, or a scan stopped at its limit)."""
        return self._next <= self._last

    def _scan(self, queues: SendQueues) -> bool:
        ready = False
        early = self._early
        prefix_len = len(self._prefix)
        entries = self._store.scan(b"outbox", self._prefix, start=seq_key(self._number, self._next))
        for looked, (key, value) in enumerate(entries, 1):
            seq = int.from_bytes(key[prefix_len:], "big")
            item = early.pop(seq, None)
            if item is None:
                entry = entry_decoder.decode(value)
                item = Pending(seq, entry.sid, entry.to_number, part=entry.part)
            ready = queues.offer(item) or ready
            self._next = seq + 1
            if queues.room() <= 0 or looked >= SCAN_LIMIT:
                break
        else:
            self._next = max(self._next, self._last + 1)  # everything committed was seen
        if early:
            for seq in [seq for seq in early if seq < self._next]:
                del early[seq]  # left the outbox before the scan came (canceled, expired)
        return ready

    def _refill(self, queues: SendQueues) -> bool:
        ready = False
        hungry: list[str] = []
        for recipient in queues.take_starved():
            room = queues.room()
            cursor = queues.deferred(recipient)
            if cursor is None:
                continue
            if room <= 0:
                hungry.append(recipient)
                continue
            want = min(room, queues.per_recipient)
            prefix = outbox.recipient_prefix(self._number, recipient)
            items: list[Pending] = []
            rest: int | None = None
            for key, value in self._store.scan(
                outbox.BY_RECIPIENT, prefix, start=prefix + cursor.to_bytes(8, "big")
            ):
                seq = int.from_bytes(key[len(prefix) :], "big")
                if seq >= self._next:
                    break  # the scan will meet it: no longer deferred
                if len(items) >= want:
                    rest = seq
                    break
                entry = entry_decoder.decode(value)
                items.append(Pending(seq, entry.sid, entry.to_number, part=entry.part))
            queues.refilled(recipient, items, rest)
            ready = ready or bool(items)
        queues.starve(hungry)
        return ready

    def _last_seq(self) -> int:
        """The highest seq ever allocated on the number's outbox (its entries may be gone)."""
        mark = self._store.get(b"meta", SEQ_MARK + b"outbox" + b"\x00" + self._prefix)
        high = int.from_bytes(mark, "big") if mark else 0
        last = next(self._store.scan_back(b"outbox", self._prefix), None)
        return max(high, int.from_bytes(last[0][len(self._prefix) :], "big") if last else 0)


__all__ = ["SCAN_LIMIT", "Backlog"]
