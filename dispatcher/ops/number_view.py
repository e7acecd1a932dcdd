"""One number in depth: its outbox by age and destination country, and its recent failures.

Reads only LMDB (inline, bounded): the outbox walk stops after ``SHAPE_LIMIT``
entries and the failure search after ``FAILURE_SCAN`` messages, and each page
says so when it stopped early, so a number with a million queued messages still
answers at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, final

import attrs

from dispatcher.core import ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord, entry_decoder
from dispatcher.core.store import Store, number_key
from dispatcher.ops.country import calling_code

SHAPE_LIMIT: Final = 10_000
FAILURE_SCAN: Final = 5_000
FAILURES_SHOWN: Final = 20
# Upper bounds of the age columns (seconds), qshape's idea in minutes and hours.
AGE_BOUNDS: Final = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
AGE_LABELS: Final = ("< 1 min", "1-5 min", "5-15 min", "15-60 min", "1-4 h", "> 4 h")
FAILED: Final = frozenset({"failed", "undelivered"})


@attrs.frozen
class ShapeRow:
    destination: str  # "+44": the recipients' country calling code
    total: int
    by_age: tuple[int, ...]  # one count per AGE_LABELS column


@attrs.frozen
class OutboxShape:
    rows: list[ShapeRow]  # most queued first
    totals: tuple[int, ...]
    total: int
    scanned_all: bool  # False: only the oldest SHAPE_LIMIT entries were read


@attrs.frozen
class Failure:
    sid: str
    to: str
    status: str
    error_code: int | None
    error_message: str | None
    at: float  # date_updated


@attrs.frozen
class Failures:
    items: list[Failure]  # newest first
    scanned: int  # messages of the account read to find them
    complete: bool  # False: stopped after FAILURE_SCAN messages


def _age_column(age: float) -> int:
    for index, bound in enumerate(AGE_BOUNDS):
        if age < bound:
            return index
    return len(AGE_BOUNDS)


@final
class NumberView:
    def __init__(self, *, buckets: Buckets, wall: WallClock) -> None:
        self._buckets = buckets
        self._wall = wall

    def outbox_shape(self, number: str, limit: int = SHAPE_LIMIT) -> OutboxShape:
        """The queued messages per destination country and age (a message's parts count once each)."""
        now = self._wall.now()
        store = self._buckets.for_number(number)
        counts: dict[str, list[int]] = {}
        read = 0
        scanned_all = True
        created: dict[str, float] = {}
        for _, value in store.scan(b"outbox", number_key(number)):
            if read >= limit:
                scanned_all = False
                break
            read += 1
            entry = entry_decoder.decode(value)
            at = created.get(entry.sid)
            if at is None:
                raw = store.get(b"messages", ledger.sid_key(entry.sid))
                at = created[entry.sid] = now if raw is None else ledger.load(raw).date_created
            row = counts.setdefault(calling_code(entry.to_number), [0] * len(AGE_LABELS))
            row[_age_column(now - at)] += 1
        rows = [ShapeRow(code, sum(ages), tuple(ages)) for code, ages in counts.items()]
        rows.sort(key=lambda r: (-r.total, r.destination))
        totals = tuple(sum(r.by_age[i] for r in rows) for i in range(len(AGE_LABELS)))
        return OutboxShape(rows=rows, totals=totals, total=read, scanned_all=scanned_all)

    def failures(self, number: str, account_sid: str) -> Failures:
        """The number's newest failed messages, from the newest ``FAILURE_SCAN`` of its account."""
        found: list[Failure] = []
        scanned = 0
        complete = True
        for record in _newest(self._buckets.for_number(number), account_sid):
            if scanned >= FAILURE_SCAN:
                complete = False
                break
            scanned += 1
            if record.from_number == number and record.status in FAILED:
                found.append(
                    Failure(
                        sid=record.sid,
                        to=record.to_number,
                        status=record.status,
                        error_code=record.error_code,
                        error_message=record.error_message,
                        at=record.date_updated,
                    )
                )
                if len(found) >= FAILURES_SHOWN:
                    break
        return Failures(items=found, scanned=scanned, complete=complete)


def _newest(store: Store, account_sid: str) -> Iterator[MessageRecord]:
    """The account's messages in one bucket (the number's: its messages live there), newest first."""
    prefix = account_sid.encode() + b"\x00"
    skip = len(prefix) + 8  # account NUL, creation ms: the sid follows
    for key, _ in store.scan_back(b"by_account", prefix):
        raw = store.get(b"messages", key[skip:])
        if raw is not None:
            yield ledger.load(raw)
