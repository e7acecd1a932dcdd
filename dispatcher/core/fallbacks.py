"""Fallback messages' durable state: the due index, its triggers, the link between the two messages.

A message with a ``FallbackPlan`` is watched through the ``fallbacks`` DB, keyed by
due time (ms, big-endian) then sid, as scheduled messages are: a cursor walks
them in due order and the firing task (``dispatcher.messages.fallback``) sleeps
until the first. An entry is written

- at create, for the plan's deadline (``timer``): no ``delivered`` (or ``sent``)
  by then sends the fallback;
- by the same write that records a failure with one of the plan's error codes
  (``error``, due at once): ``on_status``, called by every status change of the
  ledger, so a trigger is committed with the status that caused it or not at all.

Reaching the awaited status removes the timer entry; a message whose fallback
exists (``fallback_sid``) never triggers again, so a late delivery of it is
recorded as a status like any other and never causes a third send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, final

import trio

from dispatcher.core import callbacks, outbox
from dispatcher.core.models import STATUS_RANK, FallbackPlan, MessageRecord, record_decoder, record_encoder
from dispatcher.core.store import Store, WriteTxn

DB: Final = b"fallbacks"
TIMER: Final = b"timer"
ERROR: Final = b"error"
FAILED: Final = frozenset({"failed", "undelivered"})
DELIVERED: Final = frozenset({"delivered", "read"})
WINDOW_CLOSED: Final = 63016
WITHDRAWN: Final = 30036  # Twilio's "validity period expired": it never left in time

WriteFn = Callable[[WriteTxn], MessageRecord | None]


def key(due: float, sid: str) -> bytes:
    return int(due * 1000).to_bytes(8, "big") + sid.encode()


def sid_of(index_key: bytes) -> str:
    return bytes(index_key[8:]).decode()


def due_of(index_key: bytes) -> float:
    return int.from_bytes(index_key[:8], "big") / 1000.0


def reached(status: str, awaiting: str) -> bool:
    """``status`` is at least ``awaiting`` (``read`` counts as delivered) and not a failure."""
    return status not in FAILED and status != "canceled" and STATUS_RANK[status] >= STATUS_RANK[awaiting]


def triggers(record: MessageRecord, plan: FallbackPlan) -> bool:
    """The message failed in a way its plan falls back on: a listed code, or 63016 with a window template."""
    code = record.error_code
    if record.status not in FAILED or code is None:
        return False
    return code in plan.error_codes or (code == WINDOW_CLOSED and plan.window_template is not None)


def stands_in_for_window(plan: FallbackPlan) -> bool:
    """A message refused for the 24 h window (63016) is kept, failed, for its fallback to stand
    in: the window template, or the fallback sender when 63016 is one of the plan's codes."""
    return plan.window_template is not None or WINDOW_CLOSED in plan.error_codes


def watch(txn: WriteTxn, record: MessageRecord, now: float) -> None:
    """Inside the write that stores a new message with a plan: its deadline, and a trigger at once
    if it was stored failed (refused for the window at create)."""
    plan = record.fallback
    assert plan is not None
    if plan.due_at is not None:
        txn.put(DB, key(plan.due_at, record.sid), TIMER)
    on_status(txn, record, now)


def on_status(txn: WriteTxn, record: MessageRecord, now: float) -> None:
    """Inside the write that changed ``record``'s status: trigger its fallback, or stop its timer."""
    plan = record.fallback
    if plan is None:
        return
    if record.fallback_sid is not None:
        if record.late_status is None and record.status in DELIVERED:
            record.late_status = record.status  # arrived after all: recorded, never sent again
        return
    if triggers(record, plan):
        txn.put(DB, key(now, record.sid), ERROR)
        _drop_timer(txn, record.sid, plan)
    elif reached(record.status, plan.awaiting):
        _drop_timer(txn, record.sid, plan)


def _drop_timer(txn: WriteTxn, sid: str, plan: FallbackPlan) -> None:
    if plan.due_at is not None:
        txn.delete(DB, key(plan.due_at, sid))


def first_due(store: Store) -> float | None:
    for index_key, _ in store.scan(DB, b""):
        return due_of(index_key)
    return None


def due(store: Store, now: float, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to ``limit`` (key, reason) entries due by ``now``, earliest first."""
    horizon = int(now * 1000)
    out: list[tuple[bytes, bytes]] = []
    for index_key, reason in store.scan(DB, b""):
        if int.from_bytes(index_key[:8], "big") > horizon or len(out) >= limit:
            break
        out.append((bytes(index_key), bytes(reason)))
    return out


def pending(store: Store) -> int:
    return store.count(DB, b"")


def _load(txn: WriteTxn, sid: str) -> MessageRecord | None:
    raw = txn.get(b"messages", sid.encode())
    return None if raw is None else record_decoder.decode(raw)


def _store(txn: WriteTxn, record: MessageRecord) -> None:
    txn.put(b"messages", record.sid.encode(), record_encoder.encode(record))


def link(index_key: bytes, fallback_sid: str, now: float) -> WriteFn:
    """The fallback was committed: the primary names it, and leaves the index for good.

    Returns the primary, or None if it is gone. Linking again (a fire repeated after a
    crash, the fallback replayed by its idempotency key) changes nothing.
    """

    def name_it(record: MessageRecord) -> bool:
        record.fallback_sid = fallback_sid
        return True

    return _settle(index_key, now, name_it)


def give_up(index_key: bytes, reason: str, now: float) -> WriteFn:
    """The fallback cannot be created (its sender or template refused it): say why, once."""

    def say_why(record: MessageRecord) -> bool:
        if record.fallback_error is not None:
            return False
        record.fallback_error = reason
        return True

    return _settle(index_key, now, say_why)


def _settle(index_key: bytes, now: float, change: Callable[[MessageRecord], bool]) -> WriteFn:
    """The entry leaves the index with the message's timer; ``change`` (if it has no fallback yet,
    and says it changed something) is stored. Returns the message, or None if it is gone."""
    sid = sid_of(index_key)

    def fn(txn: WriteTxn) -> MessageRecord | None:
        txn.delete(DB, index_key)
        record = _load(txn, sid)
        if record is None:
            return None
        if record.fallback is not None:
            _drop_timer(txn, sid, record.fallback)
        if record.fallback_sid is None and change(record):
            record.date_updated = now
            _store(txn, record)
        return record

    return fn


def drop(index_key: bytes) -> WriteFn:
    """A watch no longer needed (the awaited status came, the message is gone or canceled)."""

    def fn(txn: WriteTxn) -> MessageRecord | None:
        txn.delete(DB, index_key)
        return None

    return fn


def postpone(index_key: bytes, due_at: float) -> WriteFn:
    """Try an entry again at ``due_at`` (the fallback could not be stored, or its sender is drained)."""

    def fn(txn: WriteTxn) -> MessageRecord | None:
        reason = txn.get(DB, index_key)
        if reason is not None and txn.delete(DB, index_key):
            txn.put(DB, key(due_at, sid_of(index_key)), bytes(reason))
        return None

    return fn


def withdraw(sid: str, after: float, now: float) -> WriteFn:
    """The deadline passed while the message still waits in its outbox: it leaves it, ``failed``
    (30036), so the customer gets the fallback alone. Returns it if withdrawn, else None (it is
    on its way, or settled: it keeps its course and its late status)."""

    def fn(txn: WriteTxn) -> MessageRecord | None:
        record = _load(txn, sid)
        if record is None or record.status not in ("accepted", "queued") or record.outbox_seq is None:
            return None
        if not outbox.remove(txn, record.from_number, record.outbox_seq):
            return None  # taken for sending
        for later in range(1, record.parts):
            outbox.remove(txn, record.from_number, record.outbox_seq + later)
        outbox.unexpire(txn, record.from_number, record.valid_until, record.outbox_seq)
        record.status = "failed"
        record.error_code = WITHDRAWN
        record.error_message = f"Not sent within {after:g} s: withdrawn for its fallback."
        record.outbox_seq = None
        record.date_updated = now
        _store(txn, record)
        callbacks.status_changed(txn, record, now)
        return record

    return fn


@final
class Alarm:
    """Wakes the firing task early: a trigger was committed, or a new earlier deadline."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until rung or ``timeout`` seconds passed; a ring before the call counts."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()
