"""The data root's buckets as Stores: which one holds a sender number, a sid, a message.

Everything about a sender number lives in its bucket (messages, outbox, the
channel-id index, window, token, tier, scheduled, callbacks, idempotency keys),
so every write about one number is one bucket's group commit. What is about no
number in particular (admin-added templates) lives in bucket 0, ``home``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import final

from dispatcher.core import ledger
from dispatcher.core.bucketing import SID_LENGTH, check_count, sid_slot, sid_time_ms, slot_of
from dispatcher.core.dataroot import DataRoot
from dispatcher.core.store import Store


@final
class Buckets:
    """One Store per bucket, in bucket order."""

    def __init__(self, stores: Sequence[Store], *, slots_since_ms: int = 0) -> None:
        """``slots_since_ms``: sids created before it carry no slot (``DataRoot.slots_since_ms``)."""
        self.count = check_count(len(stores))
        self.stores: tuple[Store, ...] = tuple(stores)
        self.home = self.stores[0]
        self._mask = self.count - 1
        self._slots_since_ms = slots_since_ms
        # The buckets this process serves (sends, callbacks, scheduled messages): every one,
        # unless ownership decides (``dispatcher.ownership``: several processes or hosts).
        self._local = set(range(self.count))

    @classmethod
    def single(cls, store: Store) -> Buckets:
        """A one-bucket root: ``store`` holds everything (tests, and every B = 1 daemon)."""
        return cls([store])

    @classmethod
    def open(cls, root: DataRoot, *, map_size: int, map_max: int | None, max_batch: int) -> Buckets:
        """A Store for each bucket of ``root`` (their writers not started yet)."""
        stores: list[Store] = []
        try:
            for index in range(root.count):
                stores.append(
                    Store(root.bucket_dir(index), map_size=map_size, map_max=map_max, max_batch=max_batch)
                )
        except BaseException:
            for store in stores:  # no writer runs yet: closing is safe
                store.close_env()
            raise
        return cls(stores, slots_since_ms=root.slots_since_ms)

    def serve_none(self) -> None:
        """Serve no bucket until ``serve`` (a process whose buckets ownership hands out)."""
        self._local.clear()

    def serve(self, index: int) -> None:
        self._local.add(index)

    def stop_serving(self, index: int) -> None:
        self._local.discard(index)

    def is_local(self, index: int) -> bool:
        """This process serves bucket ``index`` (its owner, or the only process)."""
        return index in self._local

    def local(self) -> list[tuple[int, Store]]:
        """The buckets this process serves, with their index."""
        return [(index, self.stores[index]) for index in sorted(self._local)]

    def index(self, number: str) -> int:
        return slot_of(number) & self._mask

    def for_number(self, number: str) -> Store:
        """The bucket of sender (or receiving) number ``number``."""
        if self.count == 1:
            return self.home
        return self.stores[slot_of(number) & self._mask]

    def index_of_sid(self, sid: str) -> int | None:
        """The bucket a sid names; None if it names none (malformed, or minted before slots)."""
        if self.count == 1:
            return 0
        slot = sid_slot(sid)
        if slot is None:
            return None
        created = sid_time_ms(sid)
        if created is not None and created < self._slots_since_ms:
            return None
        return slot & self._mask

    def for_sid(self, sid: str) -> Iterator[Store]:
        """The bucket(s) that may hold ``sid``: the one it names, or all for a sid from before slots."""
        index = self.index_of_sid(sid)
        if index is not None:
            yield self.stores[index]
        elif len(sid) == SID_LENGTH:
            yield from self.stores

    def message(self, sid: str) -> tuple[Store, bytes] | None:
        """The stored record of ``sid`` and the bucket holding it (inline reads)."""
        key = ledger.sid_key(sid)
        for store in self.for_sid(sid):
            raw = store.get(b"messages", key)
            if raw is not None:
                return store, raw
        return None

    def statistics_sum(self) -> tuple[int, int]:
        """(commits, queued writes) over every bucket: the writers' progress (sd_notify's watchdog)."""
        commits = queued = 0
        for store in self.stores:
            stats = store.statistics()
            commits += stats.commits
            queued += stats.queued
        return commits, queued
