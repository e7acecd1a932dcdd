"""Buckets for tests: one Store as a one-bucket root, or several LMDB environments under a tmp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from dispatcher.core.buckets import Buckets
from dispatcher.core.dataroot import open_root
from dispatcher.core.store import Store
from dispatcher.ownership.interface import Owner


@attrs.define
class FixedOwners:
    """An owner table that says what the test set (``dispatcher.ops.cluster.OwnerTable``)."""

    table: dict[int, Owner | None]
    owner_id: str = "A"

    def owner(self, bucket: int) -> Owner | None:
        return self.table[bucket]


def as_buckets(store: Store | Buckets) -> Buckets:
    """``store`` as the only bucket of a root (the daemon's B = 1), or the buckets as given."""
    return store if isinstance(store, Buckets) else Buckets.single(store)


@asynccontextmanager
async def open_buckets(path: Path, count: int, *, commit_in_thread: bool = False) -> AsyncIterator[Buckets]:
    """A data root of ``count`` buckets at ``path`` with every writer running (on the trio thread by
    default, for MockClock tests); closed on exit."""
    root = open_root(path, count)
    stores = [
        Store(root.bucket_dir(i), map_size=64 << 20, commit_in_thread=commit_in_thread) for i in range(count)
    ]
    buckets = Buckets(stores, slots_since_ms=root.slots_since_ms)
    try:
        async with trio.open_nursery() as nursery:
            for store in stores:
                await nursery.start(store.run_writer)
            try:
                yield buckets
            finally:
                for store in stores:
                    store.close()
    finally:
        for store in stores:
            store.close_env()
