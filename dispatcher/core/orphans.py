"""Statuses parked until we know which message their channel id belongs to, per number, bounded.

A status webhook can beat the commit that records a send's channel id (the
actor writes ``sent`` after the API answered; Meta may post ``sent`` first).
Such a status is parked here under the number whose webhook carried it, and
``ledger.mark_sent`` applies it when that same number records the id. Keying
by number means a webhook of one number can never park a status that another
number's send later picks up.

Anyone holding a number's webhook secret can post statuses for ids that never
come, so parked statuses are bounded: at most ``limit`` per number (the oldest
leave first) and each expires ``ttl`` seconds (wall time) after it arrived.
Keys in the ``meta`` DB (number and channel id bounded by ``keys.part``)::

    orphan NUL number NUL channel-id        -> Orphan
    orphan_at NUL number NUL at(8B, ms) id  -> b""   (oldest first, per number)
    orphan_n NUL number                     -> count (4B)
"""

from __future__ import annotations

import struct
from typing import Final

import attrs
import msgspec

from dispatcher.core import keys
from dispatcher.core.models import advances
from dispatcher.core.store import SEP, WriteTxn

DB: Final = b"meta"
DEFAULT_LIMIT: Final = 10_000
DEFAULT_TTL: Final = 3600.0
SWEEP_BATCH: Final = 64
_COUNT: Final = struct.Struct(">I")
_MS: Final = struct.Struct(">Q")


class Orphan(msgspec.Struct, array_like=True):
    """A status that arrived before we recorded which message its channel id belongs to."""

    status: str
    error_code: int | None = None
    error_message: str | None = None
    at: float = 0.0  # wall time it arrived
    until: float = 0.0  # wall time it expires (0: parked before expiry existed, never)


@attrs.frozen
class Limits:
    """How many statuses one number may have parked, and for how long (seconds)."""

    limit: int = DEFAULT_LIMIT
    ttl: float = DEFAULT_TTL

    def __attrs_post_init__(self) -> None:
        if self.limit < 1 or not self.ttl > 0:
            raise ValueError("orphan limit must be >= 1 and ttl > 0")


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Orphan)


def _key(number: str, channel_id: str) -> bytes:
    return b"orphan" + SEP + keys.part(number) + SEP + keys.part(channel_id)


def _index_prefix(number: str) -> bytes:
    return b"orphan_at" + SEP + keys.part(number) + SEP


def _index(number: str, at: float, channel_id: str) -> bytes:
    return _index_prefix(number) + _MS.pack(max(0, int(at * 1000))) + keys.part(channel_id)


def _count_key(number: str) -> bytes:
    return b"orphan_n" + SEP + keys.part(number)


def count(txn: WriteTxn, number: str) -> int:
    raw = txn.get(DB, _count_key(number))
    return 0 if raw is None else int(_COUNT.unpack(raw)[0])


def _set_count(txn: WriteTxn, number: str, n: int) -> None:
    if n > 0:
        txn.put(DB, _count_key(number), _COUNT.pack(n))
    else:
        txn.delete(DB, _count_key(number))


def park(txn: WriteTxn, number: str, channel_id: str, orphan: Orphan, limits: Limits) -> bool:
    """Park ``orphan`` for ``number``'s ``channel_id``; returns whether anything was written.

    A second status for a parked id replaces the first only if it moves further
    (it keeps the first's arrival time: the ttl counts from the first). Expired
    statuses are swept first; a full number drops its oldest to make room.
    """
    now = orphan.at
    _sweep(txn, number, now - limits.ttl)
    orphan = Orphan(orphan.status, orphan.error_code, orphan.error_message, now, now + limits.ttl)
    key = _key(number, channel_id)
    old_raw = txn.get(DB, key)
    if old_raw is not None:
        old = _decoder.decode(old_raw)
        if not advances(old.status, orphan.status):
            return False
        orphan = Orphan(orphan.status, orphan.error_code, orphan.error_message, old.at, old.until)
        txn.put(DB, key, _encoder.encode(orphan))
        return True
    n = count(txn, number)
    while n >= limits.limit:
        if not _drop_oldest(txn, number):
            n = 0  # the count disagreed with the index: trust the index
            break
        n -= 1
    txn.put(DB, key, _encoder.encode(orphan))
    txn.put(DB, _index(number, orphan.at, channel_id), b"")
    _set_count(txn, number, n + 1)
    return True


def take(txn: WriteTxn, number: str, channel_id: str, now: float) -> Orphan | None:
    """The status parked for ``number``'s ``channel_id`` (removed), unless expired."""
    key = _key(number, channel_id)
    raw = txn.get(DB, key)
    if raw is None:
        return None
    orphan = _decoder.decode(raw)
    txn.delete(DB, key)
    txn.delete(DB, _index(number, orphan.at, channel_id))
    _set_count(txn, number, count(txn, number) - 1)
    return orphan if not orphan.until or orphan.until > now else None


def _sweep(txn: WriteTxn, number: str, before: float, batch: int = SWEEP_BATCH) -> int:
    """Drop up to ``batch`` of ``number``'s statuses parked before ``before``."""
    prefix = _index_prefix(number)
    cutoff = max(0, int(before * 1000))
    doomed: list[bytes] = []
    with txn.txn.cursor(txn.db(DB)) as cursor:
        if cursor.set_range(prefix):
            for raw_key, _ in cursor:
                index = bytes(raw_key)
                if not index.startswith(prefix) or len(doomed) >= batch:
                    break
                if _MS.unpack_from(index, len(prefix))[0] >= cutoff:
                    break
                doomed.append(index)
    for index in doomed:
        _remove_indexed(txn, number, index)
    if doomed:
        _set_count(txn, number, max(0, count(txn, number) - len(doomed)))
    return len(doomed)


def _drop_oldest(txn: WriteTxn, number: str) -> bool:
    prefix = _index_prefix(number)
    with txn.txn.cursor(txn.db(DB)) as cursor:
        if not cursor.set_range(prefix):
            return False
        index = bytes(cursor.key())
    if not index.startswith(prefix):
        return False
    _remove_indexed(txn, number, index)
    return True


def _remove_indexed(txn: WriteTxn, number: str, index: bytes) -> None:
    channel_part = index[len(_index_prefix(number)) + _MS.size :]  # keys.part(channel_id), as stored
    txn.delete(DB, index)
    txn.delete(DB, b"orphan" + SEP + keys.part(number) + SEP + channel_part)
