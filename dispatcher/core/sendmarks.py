"""Send-started marks: the outbox entries whose request may be on the wire, for at-most-once numbers.

A number with ``on_ambiguous = "fail"`` must never send a message twice, not even
when the process sending it dies (``kill -9``, a host lost) or its bucket passes to
another daemon mid-send. Its actor commits a mark for an entry before the request
goes on the wire, and the commit that records what came of it (sent, failed, or a
retry after a *definite* non-delivery) removes the mark again. Whoever recovers the
outbox next (the same daemon restarted, or a bucket's new owner) finds a mark with
its entry still in the outbox: that send's outcome is unknown, so it is ambiguous.

The ``started`` DB: number NUL seq(8B) -> the wall time the send started (ms, 8B).
Numbers under the default ``retry`` write no marks: their sends cost nothing more,
and an interrupted send is simply sent again (at-least-once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

import attrs

from dispatcher.core.keys import number_key, seq_key

if TYPE_CHECKING:
    from dispatcher.core.store import Store, WriteTxn

DB: Final = b"started"


@attrs.frozen
class Mark:
    """Entry ``seq``'s send started at wall time ``since`` and has no recorded outcome."""

    seq: int
    since: float


def mark(number: str, seq: int, now: float) -> Callable[[WriteTxn], None]:
    """The write that marks entry ``seq`` of ``number`` as being sent (at wall time ``now``)."""
    value = int(now * 1000).to_bytes(8, "big")

    def fn(txn: WriteTxn) -> None:
        txn.put(DB, seq_key(number, seq), value)

    return fn


def clear(txn: WriteTxn, number: str, seq: int) -> None:
    """Inside a write: entry ``seq``'s send is over (or never went out): its mark goes."""
    txn.delete(DB, seq_key(number, seq))


def started(txn: WriteTxn, number: str, seq: int) -> bool:
    """Inside a write: whether entry ``seq``'s send started and has no recorded outcome."""
    return txn.get(DB, seq_key(number, seq)) is not None


def unmark(number: str, seqs: Iterable[int]) -> Callable[[WriteTxn], None]:
    """The write that clears the marks of ``seqs`` (a definite non-delivery, or marks left over)."""
    seqs = tuple(seqs)

    def fn(txn: WriteTxn) -> None:
        for seq in seqs:
            clear(txn, number, seq)

    return fn


def read(store: Store, number: str) -> list[Mark]:
    """``number``'s marks in outbox order (inline: at most one per recipient in flight)."""
    prefix = number_key(number)
    return [
        Mark(int.from_bytes(key[len(prefix) :], "big"), int.from_bytes(value, "big") / 1000)
        for key, value in store.scan(DB, prefix)
    ]


__all__ = ["DB", "Mark", "clear", "mark", "read", "started", "unmark"]
