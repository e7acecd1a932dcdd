"""Every state change of a message, as one store write function each.

Each function returns a closure for ``Store.write``: it runs inside the group
commit, reads what it needs from the same transaction and writes the result,
so read-modify-write is atomic (there is only one writer) and a status can
never move backwards, whichever order the webhooks arrive in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from dispatcher.models import (
    MessageRecord,
    OutboxEntry,
    advances,
    record_decoder,
    record_encoder,
)
from dispatcher.store import WriteTxn, number_key, seq_key

Write = Callable[[WriteTxn], "int | MessageRecord | None"]


class Orphan(msgspec.Struct, array_like=True):
    """A status that arrived before we recorded which message its channel id belongs to."""

    status: str
    error_code: int | None = None
    error_message: str | None = None
    at: float = 0.0


_orphan_decoder: Final = msgspec.msgpack.Decoder(Orphan)


def sid_key(sid: str) -> bytes:
    return sid.encode()


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
    """Store a new outbound message and queue it on its number's outbox; returns the seq."""
    entry = record_encoder.encode(OutboxEntry(record.sid, record.to_number))

    def fn(txn: WriteTxn) -> int:
        insert(txn, record)
        prefix = number_key(record.from_number)
        seq = txn.next_seq(b"outbox", prefix)
        txn.put(b"outbox", seq_key(record.from_number, seq), entry, overwrite=False)
        return seq

    return fn


def mark_sent(number: str, seq: int, sid: str, channel_id: str, now: float) -> Callable[[WriteTxn], None]:
    """The API accepted the message: record its channel id, leave the outbox."""

    def fn(txn: WriteTxn) -> None:
        txn.delete(b"outbox", seq_key(number, seq))
        raw = txn.get(b"messages", sid_key(sid))
        if raw is None:
            return  # deleted meanwhile
        record = record_decoder.decode(raw)
        record.channel_id = channel_id
        record.date_sent = now
        record.date_updated = now
        record.attempts += 1
        if advances(record.status, "sent"):
            record.status = "sent"
        txn.put(b"wamid", channel_id.encode(), sid.encode())
        # A status webhook may have beaten this commit: apply what it said.
        orphan_raw = txn.get(b"meta", b"orphan" + b"\x00" + channel_id.encode())
        if orphan_raw is not None:
            orphan = _orphan_decoder.decode(orphan_raw)
            _apply(record, orphan.status, orphan.error_code, orphan.error_message, now)
            txn.delete(b"meta", b"orphan" + b"\x00" + channel_id.encode())
        txn.put(b"messages", sid_key(sid), record_encoder.encode(record))

    return fn


def mark_failed(
    number: str, seq: int, sid: str, error_code: int, error_message: str, now: float
) -> Callable[[WriteTxn], None]:
    """The send failed for good: the message ends ``failed`` with a Twilio error code."""

    def fn(txn: WriteTxn) -> None:
        txn.delete(b"outbox", seq_key(number, seq))
        raw = txn.get(b"messages", sid_key(sid))
        if raw is None:
            return
        record = record_decoder.decode(raw)
        record.attempts += 1
        _apply(record, "failed", error_code, error_message, now)
        txn.put(b"messages", sid_key(sid), record_encoder.encode(record))

    return fn


def drop_entry(number: str, seq: int) -> Callable[[WriteTxn], None]:
    """Remove an outbox entry whose message no longer needs sending (deleted, canceled)."""

    def fn(txn: WriteTxn) -> None:
        txn.delete(b"outbox", seq_key(number, seq))

    return fn


def apply_status(
    channel_id: str, status: str, error_code: int | None, error_message: str | None, now: float
) -> Callable[[WriteTxn], MessageRecord | None]:
    """A status webhook: move the message forward; park it if the channel id is not known yet.

    Returns the updated record when the status changed, else None.
    """

    def fn(txn: WriteTxn) -> MessageRecord | None:
        sid = txn.get(b"wamid", channel_id.encode())
        if sid is None:
            key = b"orphan\x00" + channel_id.encode()
            old = txn.get(b"meta", key)
            if old is None or advances(_orphan_decoder.decode(old).status, status):
                txn.put(b"meta", key, record_encoder.encode(Orphan(status, error_code, error_message, now)))
            return None
        raw = txn.get(b"messages", sid)
        if raw is None:
            return None
        record = record_decoder.decode(raw)
        if not _apply(record, status, error_code, error_message, now):
            return None
        txn.put(b"messages", sid, record_encoder.encode(record))
        return record

    return fn


def _apply(record: MessageRecord, status: str, code: int | None, message: str | None, now: float) -> bool:
    if not advances(record.status, status):
        return False
    record.status = status
    record.date_updated = now
    if code is not None:
        record.error_code = code
        record.error_message = message
    return True


def load(raw: bytes) -> MessageRecord:
    return record_decoder.decode(raw)
