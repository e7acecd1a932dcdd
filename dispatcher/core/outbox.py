"""A number's durable outbox and the views of it kept in the same transactions.

The ``outbox`` DB (number NUL seq -> ``OutboxEntry``) is the truth and the FIFO.
A number with millions pending holds only a window of them in memory
(``actors.backlog``), so three more things are written with every entry, in the
same transaction, and removed with it:

* ``outbox_to`` (number NUL recipient NUL seq -> the same ``OutboxEntry`` bytes):
  the entries of one recipient in seq order, so a recipient that had to wait
  (pair rate, backoff) picks up where it stopped without rescanning the number's
  whole outbox;
* the depth (``meta``: ``depth`` NUL number -> 8-byte count): the durable count
  ``/metrics``, ``status`` and drains report, read in O(1);
* ``expiry`` (number NUL valid_until ms NUL first seq -> sid), for messages with a
  ValidityPeriod: their actor fails them when it passes, loaded or not.

Every write of the outbox goes through ``put``/``remove`` (and ``ledger``'s
functions built on them). A data dir written before these views existed gets
them once, when its store opens (``build_views``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import lmdb

from dispatcher.core import keys
from dispatcher.core.keys import SEP, number_key, seq_key
from dispatcher.core.models import entry_decoder, record_decoder

if TYPE_CHECKING:
    from dispatcher.core.store import Store, WriteTxn

OUTBOX: Final = b"outbox"
BY_RECIPIENT: Final = b"outbox_to"
EXPIRY: Final = b"expiry"
DEPTH_MARK: Final = b"depth" + SEP  # meta: depth NUL number -> messages' entries in the outbox
VIEWS_BUILT: Final = b"outbox.views"  # meta: the views below exist for every entry


def recipient_prefix(number: str, to: str) -> bytes:
    """Key prefix of ``to``'s entries on ``number``'s outbox, in seq order."""
    return number_key(number, keys.part(to) + SEP)


def recipient_key(number: str, to: str, seq: int) -> bytes:
    return recipient_prefix(number, to) + seq.to_bytes(8, "big")


def expiry_key(number: str, valid_until: float, seq: int) -> bytes:
    """Key of the ``expiry`` index: the number, then when (ms, big-endian), then the first seq."""
    return number_key(number, int(valid_until * 1000).to_bytes(8, "big") + seq.to_bytes(8, "big"))


def parse_expiry(number: str, key: bytes) -> tuple[float, int]:
    """``(valid_until in s, first seq)`` of an ``expiry`` key of ``number``."""
    rest = key[len(number_key(number)) :]
    return int.from_bytes(rest[:8], "big") / 1000, int.from_bytes(rest[8:16], "big")


def put(txn: WriteTxn, number: str, seq: int, to: str, entry: bytes) -> None:
    """Inside a write: add one outbox entry (``entry``: an encoded ``OutboxEntry``) and count it."""
    if not txn.put(OUTBOX, seq_key(number, seq), entry, overwrite=False):
        from dispatcher.core.store import SeqTakenError

        raise SeqTakenError(f"outbox seq {seq} of {number} is taken")
    txn.put(BY_RECIPIENT, recipient_key(number, to, seq), entry)
    add_depth(txn, number, 1)


def remove(txn: WriteTxn, number: str, seq: int) -> bool:
    """Inside a write: take entry ``seq`` off ``number``'s outbox and its views; False if it was gone."""
    raw = txn.pop(OUTBOX, seq_key(number, seq))
    if raw is None:
        return False
    txn.delete(BY_RECIPIENT, recipient_key(number, entry_decoder.decode(raw).to_number, seq))
    add_depth(txn, number, -1)
    return True


def add_depth(txn: WriteTxn, number: str, delta: int) -> None:
    key = DEPTH_MARK + number.encode()
    raw = txn.get(b"meta", key)
    count = (int.from_bytes(raw, "big") if raw else 0) + delta
    txn.put(b"meta", key, max(0, count).to_bytes(8, "big"))


def depth_key(number: str) -> bytes:
    """The ``meta`` key of ``number``'s depth (read it with ``read_depth``)."""
    return DEPTH_MARK + number.encode()


def read_depth(raw: bytes | None) -> int:
    return int.from_bytes(raw, "big") if raw else 0


def depth(store: Store, number: str) -> int:
    """Entries in ``number``'s durable outbox, in O(1)."""
    return read_depth(store.get(b"meta", depth_key(number)))


def expire_at(txn: WriteTxn, number: str, valid_until: float | None, seq: int, sid: str) -> None:
    """Inside a write: index a message with a ValidityPeriod (``seq``: its first entry's)."""
    if valid_until is not None:
        txn.put(EXPIRY, expiry_key(number, valid_until, seq), sid.encode())


def unexpire(txn: WriteTxn, number: str, valid_until: float | None, seq: int | None) -> None:
    """Inside a write: the message left the outbox (sent, failed, canceled): off the expiry index."""
    if valid_until is not None and seq is not None:
        txn.delete(EXPIRY, expiry_key(number, valid_until, seq))


def build_views(env: lmdb.Environment, dbs: dict[bytes, lmdb._Database]) -> int:
    """Give every outbox entry its views, once per data dir (one transaction); returns how many.

    Runs before the store's writer starts. A data dir created with the views has
    the marker from its first open, so this reads one key.
    """
    meta = dbs[b"meta"]
    with env.begin(write=True) as txn:
        if txn.get(VIEWS_BUILT, db=meta) is not None:
            return 0
        depths: dict[bytes, int] = {}
        count = 0
        messages = dbs[b"messages"]
        for key, value in txn.cursor(db=dbs[OUTBOX]):
            number, raw_seq = key[:-9], key[-8:]  # number NUL seq(8B): the seq may hold NULs
            entry = entry_decoder.decode(value)
            seq = int.from_bytes(raw_seq, "big")
            txn.put(number + SEP + keys.part(entry.to_number) + SEP + raw_seq, value, db=dbs[BY_RECIPIENT])
            depths[number] = depths.get(number, 0) + 1
            count += 1
            if entry.part == 0:
                _index_expiry(txn, dbs, messages, number.decode(), seq, entry.sid)
        for number, depth in depths.items():
            txn.put(DEPTH_MARK + number, depth.to_bytes(8, "big"), db=meta)
        txn.put(VIEWS_BUILT, b"1", db=meta)
    return count


def _index_expiry(
    txn: lmdb.Transaction,
    dbs: dict[bytes, lmdb._Database],
    messages: lmdb._Database,
    number: str,
    seq: int,
    sid: str,
) -> None:
    raw = txn.get(sid.encode(), db=messages)
    if raw is None:
        return
    record = record_decoder.decode(raw)
    if record.valid_until is not None:
        txn.put(expiry_key(number, record.valid_until, seq), sid.encode(), db=dbs[EXPIRY])


__all__ = [
    "BY_RECIPIENT",
    "DEPTH_MARK",
    "EXPIRY",
    "OUTBOX",
    "VIEWS_BUILT",
    "add_depth",
    "build_views",
    "depth",
    "depth_key",
    "expire_at",
    "expiry_key",
    "parse_expiry",
    "put",
    "read_depth",
    "recipient_key",
    "recipient_prefix",
    "remove",
    "unexpire",
]
