"""Customer callbacks for operators: the durable queue per destination, and how each fares.

The queue is read from LMDB one destination at a time (its FIFO is keyed by
origin, in each bucket that holds callbacks for it), counting at most
``COUNT_LIMIT`` entries of each: a dead endpoint with a million pending callbacks
still answers at once (shown as "at least").
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from typing import Final, cast, final

import attrs

from dispatcher.core import callbacks
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.store import SEP, Store
from dispatcher.webhooks.callback_journal import Attempt
from dispatcher.webhooks.callback_sender import CallbackSender

COUNT_LIMIT: Final = 100_000
MAX_DESTINATIONS: Final = 500
RECENT_FAILURES: Final = 50


@attrs.frozen
class Destination:
    origin: str
    depth: int
    depth_capped: bool  # True: at least ``depth``
    oldest_age: float | None
    failures: int  # consecutive failed attempts now
    retry_in: float | None
    in_flight: int
    gave_up: int  # since start


@attrs.frozen
class CallbackOverview:
    destinations: list[Destination]  # failing first, then deepest
    total: int  # entries in the queue (LMDB's own count)
    delivered: int
    retried: int
    gave_up: int
    refused: int
    rejected: int
    failures: list[Attempt]  # the newest attempts that were not delivered


@final
class CallbackView:
    def __init__(self, *, buckets: Buckets, sender: CallbackSender, wall: WallClock) -> None:
        self._buckets = buckets
        self._sender = sender
        self._wall = wall

    def overview(self) -> CallbackOverview:
        sender = self._sender
        lanes = {lane.origin: lane for lane in sender.lanes()}
        gave_up = sender.journal.gave_up_by_origin
        now = self._wall.now()
        destinations: list[Destination] = []
        for origin, (depth, capped, created) in sorted(self._queued().items()):
            lane = lanes.get(origin)
            destinations.append(
                Destination(
                    origin=origin,
                    depth=depth,
                    depth_capped=capped,
                    oldest_age=None if created is None else max(0.0, now - created),
                    failures=lane.failures if lane is not None else 0,
                    retry_in=lane.retry_in if lane is not None else None,
                    in_flight=lane.in_flight if lane is not None else 0,
                    gave_up=gave_up.get(origin, 0),
                )
            )
        known = {d.origin for d in destinations}
        for origin, count in gave_up.items():
            if origin not in known:  # nothing queued now, but it lost callbacks
                destinations.append(Destination(origin, 0, False, None, 0, None, 0, count))
        destinations.sort(key=lambda d: (-d.failures, -d.depth, d.origin))
        failures = [a for a in sender.journal.newest() if a.outcome != "delivered"][:RECENT_FAILURES]
        return CallbackOverview(
            destinations=destinations,
            total=sum(store.entries(callbacks.DB) for store in self._buckets.stores),
            delivered=sender.delivered,
            retried=sender.retried,
            gave_up=sender.gave_up,
            refused=sender.refused,
            rejected=sender.rejected,
            failures=failures,
        )

    def attempts(self, sid: str) -> list[Attempt]:
        return self._sender.journal.for_message(sid)

    def _queued(self) -> dict[str, tuple[int, bool, float]]:
        """Per destination with queued callbacks, over every bucket: (depth, capped, oldest created_at)."""
        merged: dict[str, tuple[int, bool, float]] = {}
        for store in self._buckets.stores:
            for origin, depth, capped, created in _queued(store):
                before = merged.get(origin)
                if before is not None:
                    depth, capped, created = before[0] + depth, before[1] or capped, min(before[2], created)
                merged[origin] = (depth, capped, created)
        return merged


def _queued(store: Store) -> Iterator[tuple[str, int, bool, float]]:
    """(origin, depth, capped, oldest created_at) per destination with callbacks queued in ``store``."""
    start = b""
    for _ in range(MAX_DESTINATIONS):
        first = _first(store, start)
        if first is None:
            return
        key, value = first
        prefix = key[: key.index(SEP) + 1]
        depth = 0
        with contextlib.closing(_scan(store, prefix)) as rows:
            for _row in rows:
                depth += 1
                if depth >= COUNT_LIMIT:
                    break
        created = callbacks.entry_decoder.decode(value).created_at
        yield prefix[:-1].decode(errors="replace"), depth, depth >= COUNT_LIMIT, created
        start = prefix[:-1] + b"\x01"


def _scan(
    store: Store, prefix: bytes, start: bytes | None = None
) -> Generator[tuple[bytes, bytes], None, None]:
    """The store's scan generator, to close promptly (it holds a read txn)."""
    return cast("Generator[tuple[bytes, bytes], None, None]", store.scan(callbacks.DB, prefix, start=start))


def _first(store: Store, start: bytes) -> tuple[bytes, bytes] | None:
    with contextlib.closing(_scan(store, b"", start)) as rows:
        for row in rows:
            return row
    return None
