"""Scheduled messages (``SendAt`` + ``ScheduleType=fixed``): kept durably, fired at their time.

A scheduled message is stored with status ``scheduled`` and no outbox entry,
plus an index entry in the ``scheduled`` DB keyed by due time (ms, big-endian)
and sid, so a cursor walks them in due order, in the bucket of its sender. One
timer task sleeps until the earliest due time of every bucket (or until a new,
earlier message wakes it), then moves every due message to ``queued`` and onto
its number's outbox in one write per bucket, and hands them to the actors. The
index is the source of truth: after a restart the task fires whatever fell due
while the daemon was down, at once.

Times are wall-clock (``SendAt`` is a UTC instant) and come from the injected
``WallClock``; the task sleeps in bounded steps so a wall-clock jump is seen
within ``max_sleep``. Twilio's rules: ``SendAt`` between 15 minutes and 35
days ahead (35114), and only with a Messaging Service. ``ledger.cancel``
(``Status=canceled``) takes a scheduled message out of the index.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, final

import structlog
import trio

from dispatcher.core import fallbacks, ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord, record_decoder, record_encoder
from dispatcher.core.store import Store, WriteTxn
from dispatcher.core.twilio import TwilioError

log = structlog.get_logger()

MIN_AHEAD: Final = 15 * 60.0
MAX_AHEAD: Final = 35 * 86_400.0
WINDOW_CLOSED: Final = (63016, "Failed to send freeform message because you are outside the allowed window.")

Notify = Callable[[int, MessageRecord, int], None]
Blocked = Callable[[MessageRecord, float], bool]


def parse_send_at(value: str, now: float) -> float:
    """ISO-8601 ``SendAt`` -> Unix seconds; 35114 unless 15 min .. 35 days ahead of ``now``."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TwilioError(
            400, 35114, f"SendAt {value!r} is not an ISO-8601 timestamp such as 2026-05-15T14:30:00Z."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    at = when.timestamp()
    if not MIN_AHEAD <= at - now <= MAX_AHEAD:
        raise TwilioError(400, 35114, "SendAt must be between 15 minutes and 35 days in the future.")
    return at


def schedule(record: MessageRecord) -> Callable[[WriteTxn], int]:
    """Store a new scheduled message and index it by due time (no outbox entry yet); returns 0."""
    assert record.send_at is not None and record.status == "scheduled"

    def fn(txn: WriteTxn) -> int:
        ledger.insert(txn, record)
        txn.put(
            b"scheduled", ledger.scheduled_key(record.send_at or 0.0, record.sid), record.from_number.encode()
        )
        return 0

    return fn


def _fire(now: float, limit: int, blocked: Blocked) -> Callable[[WriteTxn], list[tuple[int, MessageRecord]]]:
    """Move every message due by ``now`` (at most ``limit``) to its outbox; (first seq, record) each."""
    horizon = int(now * 1000)

    def fn(txn: WriteTxn) -> list[tuple[int, MessageRecord]]:
        cur = txn.txn.cursor(db=txn.db(b"scheduled"))
        due: list[bytes] = []
        if cur.first():
            for key in cur.iternext(keys=True, values=False):
                if int.from_bytes(key[:8], "big") > horizon or len(due) >= limit:
                    break
                due.append(bytes(key))
        fired: list[tuple[int, MessageRecord]] = []
        for key in due:
            txn.delete(b"scheduled", key)
            sid = key[8:]
            raw = txn.get(b"messages", sid)
            if raw is None:
                continue
            record = record_decoder.decode(raw)
            if record.status != "scheduled":
                continue  # canceled (or otherwise settled) meanwhile
            record.date_updated = now
            if blocked(record, now):
                record.status = "failed"
                record.error_code, record.error_message = WINDOW_CLOSED
                if record.fallback is not None:
                    fallbacks.on_status(txn, record, now)  # a window template may stand in
            else:
                record.status = "queued"
                fired.append((ledger.enqueue(txn, record), record))
            txn.put(b"messages", sid, record_encoder.encode(record))
        return fired

    return fn


def _next_due(store: Store) -> float | None:
    for key, _ in store.scan(b"scheduled", b""):
        return int.from_bytes(key[:8], "big") / 1000.0
    return None


@final
class Scheduler:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        notify: Notify,
        blocked: Blocked = lambda record, now: False,
        batch: int = 1000,
        max_sleep: float = 60.0,
    ) -> None:
        self._buckets = buckets
        self._wall = wall
        self._notify = notify
        self._blocked = blocked
        self._batch = batch
        self._max_sleep = max_sleep
        self._wakeup = trio.Event()
        self._stopping = False
        self.fired = 0

    def wake(self) -> None:
        """A message was scheduled: re-check the earliest due time."""
        self._wakeup.set()

    def stop(self) -> None:
        """Fire nothing more; ``run`` returns (what is not due stays scheduled in LMDB)."""
        self._stopping = True
        self._wakeup.set()

    def next_due(self) -> float | None:
        """The earliest due time over every bucket served here."""
        earliest = None
        for _, store in self._buckets.local():
            due = _next_due(store)
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def pending(self) -> int:
        return sum(store.count(b"scheduled", b"") for store in self._buckets.stores)

    async def fire_due(self) -> int:
        """Queue every message due now; returns how many were queued."""
        total = 0
        now = self._wall.now()
        for _, store in self._buckets.local():
            due = _next_due(store)
            if due is not None and due <= now:
                total += await self._fire_bucket(store)
        self.fired += total
        return total

    async def _fire_bucket(self, store: Store) -> int:
        total = 0
        while True:
            now = self._wall.now()
            fired = await store.write(_fire(now, self._batch, self._blocked))
            for first, record in fired:
                for part in range(record.parts):
                    self._notify(first + part, record, part)
                log.info("message.schedule_fired", sid=record.sid, number=record.from_number)
            total += len(fired)
            if len(fired) < self._batch:
                return total

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire scheduled messages at their time until ``stop()`` (or cancelled)."""
        task_status.started()
        self._stopping = False
        while not self._stopping:
            self._wakeup = trio.Event()
            due = self.next_due()
            delay = self._max_sleep if due is None else due - self._wall.now()
            if delay > 0:
                with trio.move_on_after(min(delay, self._max_sleep)):
                    await self._wakeup.wait()
                continue
            await self.fire_due()
