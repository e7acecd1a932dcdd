"""Webhook events already applied, remembered durably for a while (``dedup`` DB).

Meta redelivers a webhook until it gets a 200 (for up to 7 days) and can send
one status twice; a restart must not forget what was applied. Keys are
``scope NUL event key`` -> expiry (wall seconds). The route reads inline
(``seen``), applies the rest, then ``mark``s them in one write. A crash between
the two re-applies on redelivery, which is harmless: statuses only move
forward and inbound messages are also unique by wamid in the ledger.

Expired keys are swept with each mark through a time index (``t`` + expiry +
key), so a sweep reads only what it deletes plus one row.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Final

from dispatcher.core import keys
from dispatcher.core.store import SEP, Store, WriteTxn

TTL: Final = 7 * 86_400.0
SWEEP_BATCH: Final = 1000
_TIME: Final = struct.Struct(">d")


_MS: Final = struct.Struct(">Q")


def _key(scope: str, key: str) -> bytes:
    # Both come from a webhook: bounded, so the row and its time index (9 bytes more) fit.
    return b"k" + keys.part(scope) + SEP + keys.part(key)


def _index(expiry: float, row: bytes) -> bytes:
    return b"t" + _MS.pack(int(expiry * 1000)) + row


def seen(store: Store, scope: str, keys: Iterable[str], now: float) -> set[str]:
    """The keys already applied (and not yet expired)."""
    found: set[str] = set()
    for key in keys:
        raw = store.get(b"dedup", _key(scope, key))
        if raw is not None and _TIME.unpack(raw)[0] > now:
            found.add(key)
    return found


def mark(scope: str, keys: Iterable[str], now: float, ttl: float = TTL) -> Callable[[WriteTxn], None]:
    """The write remembering ``keys`` until ``now + ttl``, sweeping some expired keys too."""
    expiry = _TIME.pack(now + ttl)
    rows = [_key(scope, key) for key in keys]

    def write(txn: WriteTxn) -> None:
        for row in rows:
            txn.put(b"dedup", row, expiry)
            txn.put(b"dedup", _index(now + ttl, row), b"")
        sweep(txn, now)

    return write


def sweep(txn: WriteTxn, now: float, limit: int = SWEEP_BATCH) -> int:
    """Delete up to ``limit`` expired keys; returns how many."""
    doomed: list[bytes] = []
    with txn.txn.cursor(txn.db(b"dedup")) as cursor:
        if cursor.set_range(b"t"):
            for raw_index, _ in cursor:
                index = bytes(raw_index)
                if not index.startswith(b"t") or _MS.unpack(index[1:9])[0] > int(now * 1000):
                    break
                doomed.append(index)
                if len(doomed) >= limit:
                    break
    removed = 0
    for index in doomed:
        txn.delete(b"dedup", index)
        row = index[9:]
        raw = txn.get(b"dedup", row)
        if raw is not None and _TIME.unpack(raw)[0] <= now:  # not re-marked since
            txn.delete(b"dedup", row)
            removed += 1
    return removed
