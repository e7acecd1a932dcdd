"""Every state change of a message, as one store write function each.

Each function returns a closure for ``Store.write``: it runs inside the group
commit, reads what it needs from the same transaction and writes the result,
so read-modify-write is atomic (there is only one writer) and a status can
never move backwards, whichever order the webhooks arrive in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, Literal

from dispatcher.core import callbacks, fallbacks, keys, orphans, outbox, sendmarks
from dispatcher.core.models import (
    TERMINAL,
    MessageRecord,
    OutboxEntry,
    advances,
    record_decoder,
    record_encoder,
)
from dispatcher.core.orphans import Orphan
from dispatcher.core.store import SeqTakenError, WriteTxn, number_key

Write = Callable[[WriteTxn], "int | MessageRecord | None"]
__all__ = ["Orphan"]  # parked statuses live in dispatcher.core.orphans; the name stays importable here


def sid_key(sid: str) -> bytes:
    return sid.encode()


def wamid_key(channel_id: str) -> bytes:
    """Key of the ``wamid`` index: the channel's message id, bounded (it comes from WhatsApp)."""
    return keys.part(channel_id)


def account_key(record: MessageRecord) -> bytes:
    """Listing index key: by account, then creation time (ms), then sid."""
    ms = int(record.date_created * 1000)
    return record.account_sid.encode() + b"\x00" + ms.to_bytes(8, "big") + record.sid.encode()


def insert(txn: WriteTxn, record: MessageRecord) -> None:
    """Inside a write: store a new message (outbound or inbound) and index it for listing."""
    if not txn.put(b"messages", sid_key(record.sid), record_encoder.encode(record), overwrite=False):
        raise KeyError(f"message {record.sid} exists")
    txn.put(b"by_account", account_key(record), b"")


def accept(record: MessageRecord) -> Callable[[WriteTxn], int]:
    """Store a new outbound message and queue it on its number's outbox; returns the seq.

    A message of several parts (segments, media items) gets one entry per part at
    consecutive seqs ``seq .. seq + record.parts - 1``, so they go out in order.
    """

    def fn(txn: WriteTxn) -> int:
        seq = enqueue(txn, record)
        insert(txn, record)
        return seq

    return fn


def accept_many(records: list[MessageRecord]) -> Callable[[WriteTxn], list[int]]:
    """``accept`` for many records in one write: the same keys and values, each DB's put
    through one cursor. Returns each record's first seq; raises KeyError (nothing of
    it written) if a sid exists already.

    The (key, value) pairs are generated as the cursor takes them, so a batch's
    thousands of pairs never live at once for the cyclic GC to scan.
    """

    def fn(txn: WriteTxn) -> list[int]:
        firsts: list[int] = []
        views: list[tuple[bytes, bytes]] = []  # the entries by recipient, put after the outbox's
        depths: dict[str, int] = {}
        items = _outbox_items(txn, records, firsts, views, depths)
        if txn.put_many(outbox.OUTBOX, items, overwrite=False) != (entries := sum(depths.values())):
            raise SeqTakenError(f"of the batch's {entries} outbox seqs, some are taken")
        views.sort()  # in key order the cursor walks the index's pages once, not once per entry
        txn.put_many(outbox.BY_RECIPIENT, views)
        for number, added in depths.items():
            outbox.add_depth(txn, number, added)
        messages = ((sid_key(r.sid), record_encoder.encode(r)) for r in records)
        if txn.put_many(b"messages", messages, overwrite=False) != len(records):
            raise KeyError("a message of the batch exists")
        txn.put_many(b"by_account", ((account_key(r), b"") for r in records))
        for record, first in zip(records, firsts, strict=True):
            if record.valid_until is not None:
                outbox.expire_at(txn, record.from_number, record.valid_until, first, record.sid)
        return firsts

    return fn


def _outbox_items(
    txn: WriteTxn,
    records: list[MessageRecord],
    firsts: list[int],
    views: list[tuple[bytes, bytes]],
    depths: dict[str, int],
) -> Iterator[tuple[bytes, bytes]]:
    """``enqueue``'s entries for every record, in order; sets ``outbox_seq``, appends it to
    ``firsts``, each entry by recipient to ``views``, and counts the entries per number."""
    prefixes: dict[str, bytes] = {}
    for record in records:
        number = record.from_number
        prefix = prefixes.get(number)
        if prefix is None:
            prefix = prefixes[number] = number_key(number)
            depths[number] = 0
        depths[number] += record.parts
        by_recipient = outbox.recipient_prefix(number, record.to_number)
        for part in range(record.parts):
            seq = txn.next_seq(b"outbox", prefix)
            if not part:
                record.outbox_seq = seq
                firsts.append(seq)
            entry = record_encoder.encode(OutboxEntry(record.sid, record.to_number, part))
            raw_seq = seq.to_bytes(8, "big")
            views.append((by_recipient + raw_seq, entry))
            yield prefix + raw_seq, entry


def enqueue(txn: WriteTxn, record: MessageRecord) -> int:
    """Inside a write: put every part of ``record`` on its number's outbox; returns the first seq.

    Sets ``record.outbox_seq`` (the caller stores the record in the same write).
    """
    prefix = number_key(record.from_number)
    first = 0
    for part in range(record.parts):
        seq = txn.next_seq(b"outbox", prefix)
        first = first or seq
        entry = record_encoder.encode(OutboxEntry(record.sid, record.to_number, part))
        outbox.put(txn, record.from_number, seq, record.to_number, entry)
    record.outbox_seq = first
    outbox.expire_at(txn, record.from_number, record.valid_until, first, record.sid)
    return first


def scheduled_key(due: float, sid: str) -> bytes:
    """Key of the ``scheduled`` index: due time (ms, big-endian) then sid, so cursor order is due order."""
    return int(due * 1000).to_bytes(8, "big") + sid.encode()


def mark_sent(
    number: str, seq: int, sid: str, channel_id: str, now: float, *, started: bool = False
) -> Callable[[WriteTxn], None]:
    """The API accepted the message: record its channel id, leave the outbox. ``started``: the
    number marks its sends (``sendmarks``, at-most-once): the entry's mark goes too.

    Done once: with the outbox entry already gone (an outcome recorded before its actor was
    interrupted, and recorded again by the next run) it changes nothing.
    """

    def fn(txn: WriteTxn) -> None:
        if started:
            sendmarks.clear(txn, number, seq)
        if not outbox.remove(txn, number, seq):
            return
        raw = txn.get(b"messages", sid_key(sid))
        if raw is None:
            return  # deleted meanwhile
        record = record_decoder.decode(raw)
        if record.valid_until is not None:
            _left(txn, record, seq)
        record.channel_id = channel_id
        record.date_sent = now
        record.date_updated = now
        record.attempts += 1
        if advances(record.status, "sent"):
            record.status = "sent"
            callbacks.status_changed(txn, record, now)
        txn.put(b"wamid", wamid_key(channel_id), sid.encode())
        # A status webhook of this number may have beaten this commit: apply what it said.
        orphan = orphans.take(txn, number, channel_id, now)
        if orphan is not None and _apply(record, orphan.status, orphan.error_code, orphan.error_message, now):
            callbacks.status_changed(txn, record, now)
        if record.fallback is not None:
            fallbacks.on_status(txn, record, now)
        txn.put(b"messages", sid_key(sid), record_encoder.encode(record))

    return fn


def mark_failed(
    number: str,
    seq: int,
    sid: str,
    error_code: int,
    error_message: str,
    now: float,
    *,
    started: bool = False,
) -> Callable[[WriteTxn], None]:
    """The send failed for good: the message ends ``failed`` with a Twilio error code.

    Done once, like ``mark_sent``; ``started`` as there.
    """

    def fn(txn: WriteTxn) -> None:
        if started:
            sendmarks.clear(txn, number, seq)
        if not outbox.remove(txn, number, seq):
            return
        raw = txn.get(b"messages", sid_key(sid))
        if raw is None:
            return
        record = record_decoder.decode(raw)
        if record.valid_until is not None:
            _left(txn, record, seq)
        record.attempts += 1
        if _apply(record, "failed", error_code, error_message, now):
            callbacks.status_changed(txn, record, now)
            if record.fallback is not None:
                fallbacks.on_status(txn, record, now)
        txn.put(b"messages", sid_key(sid), record_encoder.encode(record))

    return fn


def drop_entry(number: str, seq: int, *, started: bool = False) -> Callable[[WriteTxn], None]:
    """Remove an outbox entry whose message no longer needs sending (deleted, canceled);
    ``started`` as for ``mark_sent``."""

    def fn(txn: WriteTxn) -> None:
        if started:
            sendmarks.clear(txn, number, seq)
        outbox.remove(txn, number, seq)

    return fn


def _left(txn: WriteTxn, record: MessageRecord, seq: int) -> None:
    """Entry ``seq`` of ``record`` (which has a ValidityPeriod) left the outbox: once its last
    part has, it leaves the expiry index too."""
    first = record.outbox_seq
    if first is not None and seq == first + record.parts - 1:
        outbox.unexpire(txn, record.from_number, record.valid_until, first)


def expire(number: str, key: bytes, now: float) -> Callable[[WriteTxn], MessageRecord | None]:
    """The ValidityPeriod under expiry index ``key`` of ``number`` passed: what is left of the
    message leaves the outbox, and it fails with 30036. Returns the record if it failed now
    (None: it had left the outbox already, its index entry is just removed)."""

    def fn(txn: WriteTxn) -> MessageRecord | None:
        sid = txn.pop(outbox.EXPIRY, key)
        if sid is None:
            return None
        _, first = outbox.parse_expiry(number, key)
        raw = txn.get(b"messages", sid)
        if raw is None:
            return None
        record = record_decoder.decode(raw)
        removed = False
        for part in range(record.parts):
            removed = outbox.remove(txn, number, first + part) or removed
        if not removed or not _apply(record, "failed", EXPIRED[0], EXPIRED[1], now):
            return None
        record.date_updated = now
        txn.put(b"messages", sid_key(record.sid), record_encoder.encode(record))
        callbacks.status_changed(txn, record, now)
        return record

    return fn


StatusOutcome = Literal["moved", "unchanged", "parked", "not_parked", "other_number", "gone"]
"""What a status did: moved its message forward; changed nothing (not a forward move); was
parked (or not, already parked further) until its channel id is known; named a message of
another number (refused); or named a message that was deleted."""


def apply_status(
    number: str,
    channel_id: str,
    status: str,
    error_code: int | None,
    error_message: str | None,
    now: float,
    limits: orphans.Limits = orphans.Limits(),  # noqa: B008 (frozen, immutable)
) -> Callable[[WriteTxn], tuple[StatusOutcome, MessageRecord | None]]:
    """A status webhook authenticated for ``number``: move the message forward.

    Only a message ``number`` sent can move: a channel id of another number's
    message (or of an inbound message) changes nothing, whoever's webhook
    carried it. An unknown channel id is parked for ``number`` (bounded, expiring:
    ``dispatcher.core.orphans``). Returns the outcome, and the record when it moved.
    """

    def fn(txn: WriteTxn) -> tuple[StatusOutcome, MessageRecord | None]:
        sid = txn.get(b"wamid", wamid_key(channel_id))
        if sid is None:
            parked = orphans.park(
                txn, number, channel_id, Orphan(status, error_code, error_message, now), limits
            )
            return ("parked" if parked else "not_parked"), None
        raw = txn.get(b"messages", sid)
        if raw is None:
            return "gone", None
        record = record_decoder.decode(raw)
        if record.from_number != number or record.direction == "inbound":
            return "other_number", None
        if not _apply(record, status, error_code, error_message, now):
            return "unchanged", None
        if record.fallback is not None:
            fallbacks.on_status(txn, record, now)
        txn.put(b"messages", sid, record_encoder.encode(record))
        callbacks.status_changed(txn, record, now)
        return "moved", record

    return fn


def _apply(record: MessageRecord, status: str, code: int | None, message: str | None, now: float) -> bool:
    if not advances(record.status, status):
        return False
    record.status = status
    record.date_updated = now
    if status == "delivered":
        record.date_delivered = now
    elif status == "read":
        record.date_read = now
    if code is not None:
        record.error_code = code
        record.error_message = message
    return True


def load(raw: bytes) -> MessageRecord:
    return record_decoder.decode(raw)


# A message whose ValidityPeriod passed before it was sent (Twilio's 30036).
EXPIRED: Final = (30036, "Validity period expired: the message was not sent within its ValidityPeriod")

# -- changes a customer asks for (update, delete) -------------------------------------

# Still waiting in the outbox, not yet handed to the channel: cancel takes it out.
CANCELABLE: Final = frozenset({"accepted", "queued"})
# Not finished: the record is still being worked on, so it cannot go away or lose its body.
IN_PROGRESS: Final = frozenset({"scheduled", "accepted", "queued", "sending"})


class MessageNotFound(LookupError):
    """No message with that sid in that account."""


class WrongState(Exception):
    """The change is not allowed in the message's current status."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _owned(txn: WriteTxn, sid: str, account_sid: str) -> MessageRecord:
    raw = txn.get(b"messages", sid_key(sid))
    if raw is None:
        raise MessageNotFound(sid)
    record = record_decoder.decode(raw)
    if record.account_sid != account_sid:
        raise MessageNotFound(sid)
    return record


def cancel(sid: str, account_sid: str, now: float) -> Callable[[WriteTxn], MessageRecord]:
    """``Status=canceled``: a message still waiting in its outbox leaves it, atomically, as ``canceled``.

    Raises MessageNotFound, or WrongState once the message has gone to the
    channel (its outbox entry is gone). Canceling a canceled message returns it
    unchanged. The caller holds the number's actor off this sid while the write
    commits (``SendHolds``), so a send cannot start in between.
    """

    def fn(txn: WriteTxn) -> MessageRecord:
        record = _owned(txn, sid, account_sid)
        if record.status == "canceled":
            return record
        if record.status == "scheduled" and record.send_at is not None:
            # Not due yet: it leaves the schedule (the timer never sees it again).
            if not txn.delete(b"scheduled", scheduled_key(record.send_at, sid)):
                raise WrongState(record.status)
        elif record.status not in CANCELABLE or record.outbox_seq is None:
            raise WrongState(record.status)
        elif sendmarks.started(txn, record.from_number, record.outbox_seq):
            # Its send was cut off (a kill, a takeover): it may have gone out, and its number's
            # next actor fails it as ambiguous (at-most-once), so it is no longer cancelable.
            raise WrongState(record.status)
        elif not outbox.remove(txn, record.from_number, record.outbox_seq):
            raise WrongState(record.status)  # already taken for sending
        else:
            for later in range(1, record.parts):  # the other parts of a segmented/media message
                outbox.remove(txn, record.from_number, record.outbox_seq + later)
            outbox.unexpire(txn, record.from_number, record.valid_until, record.outbox_seq)
        record.status = "canceled"
        record.outbox_seq = None
        record.date_updated = now
        txn.put(b"messages", sid_key(sid), record_encoder.encode(record))
        return record

    return fn


def redact(sid: str, account_sid: str, now: float) -> Callable[[WriteTxn], MessageRecord]:
    """``Body=""``: erase the body of a message that is no longer in progress."""

    def fn(txn: WriteTxn) -> MessageRecord:
        record = _owned(txn, sid, account_sid)
        if record.status in IN_PROGRESS:
            raise WrongState(record.status)
        if record.body:
            record.body = ""
            record.date_updated = now
            txn.put(b"messages", sid_key(sid), record_encoder.encode(record))
        return record

    return fn


def remove(sid: str, account_sid: str) -> Callable[[WriteTxn], None]:
    """DELETE: drop a finished message, its listing entry and its channel-id mapping."""

    def fn(txn: WriteTxn) -> None:
        record = _owned(txn, sid, account_sid)
        if record.status in IN_PROGRESS:
            raise WrongState(record.status)
        txn.delete(b"messages", sid_key(sid))
        txn.delete(b"by_account", account_key(record))
        # A message still expecting statuses keeps its mapping, so they find it gone
        # instead of waiting forever as orphans.
        if record.channel_id is not None and record.status in TERMINAL:
            txn.delete(b"wamid", wamid_key(record.channel_id))

    return fn
