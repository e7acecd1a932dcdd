"""Epoch fencing in the Store: a commit by an overtaken owner writes nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dispatcher.core import outbox
from dispatcher.core.store import SeqTakenError, StaleEpochError, Store, WriteTxn, seq_key


def put(key: bytes, value: bytes = b"v") -> Callable[[WriteTxn], None]:
    def write(txn: WriteTxn) -> None:
        txn.put(b"meta", key, value)

    return write


async def test_an_unfenced_store_records_no_epoch(writer: Store) -> None:
    await writer.write(put(b"k"))
    assert writer.epoch is None
    assert writer.recorded_epoch == 0


async def test_a_fenced_commit_records_its_epoch(writer: Store) -> None:
    writer.fence(7)
    await writer.write(put(b"k"))
    assert writer.recorded_epoch == 7


async def test_a_newer_epoch_overwrites_an_older_one(writer: Store) -> None:
    writer.fence(3)
    await writer.write(put(b"a"))
    writer.fence(9)
    await writer.write(put(b"b"))
    assert writer.recorded_epoch == 9


_NEW_OWNER = """
import sys, trio
from dispatcher.core.store import Store
async def main():
    store = Store(sys.argv[1], map_size=64 << 20)
    async with trio.open_nursery() as n:
        await n.start(store.run_writer)
        store.fence(5)
        await store.write(lambda txn: txn.put(b"meta", b"taken", b"v"))
        store.close()
    store.close_env()
trio.run(main)
"""


async def test_a_stale_owner_writes_nothing(writer: Store, store_path: Path) -> None:
    """The old owner (epoch 4) writes after a new owner in another process (epoch 5) wrote."""
    writer.fence(4)
    await writer.write(put(b"before"))
    await trio.run_process([sys.executable, "-c", _NEW_OWNER, str(store_path)])
    assert writer.recorded_epoch == 5
    with pytest.raises(StaleEpochError) as caught:
        await writer.write(put(b"late"))
    assert (caught.value.ours, caught.value.recorded) == (4, 5)
    assert writer.get(b"meta", b"late") is None
    assert writer.get(b"meta", b"taken") == b"v"
    # The whole batch is refused, not just the first write of it.
    async with trio.open_nursery() as writes:
        for key in (b"x", b"y"):
            writes.start_soon(_refused, writer, key)
    assert writer.get(b"meta", b"x") is None and writer.get(b"meta", b"y") is None
    assert writer.recorded_epoch == 5


async def _refused(store: Store, key: bytes) -> None:
    with pytest.raises(StaleEpochError):
        await store.write(put(key))


async def test_the_writer_thread_fences_too(store_path: Path, nursery: trio.Nursery) -> None:
    """The production writer (its own thread) runs the same check inside its transaction."""
    store = Store(store_path, map_size=64 << 20)
    try:
        await nursery.start(store.run_writer)
        store.fence(2)
        await store.write(put(b"a"))
        assert store.recorded_epoch == 2
        store.fence(1)
        with pytest.raises(StaleEpochError):
            await store.write(put(b"b"))
        assert store.get(b"meta", b"b") is None
    finally:
        store.close()


def allocate(prefix: bytes) -> Callable[[WriteTxn], int]:
    def write(txn: WriteTxn) -> int:
        return txn.next_seq(b"outbox", prefix)

    return write


_ANOTHER_OWNER_ALLOCATES = """
import sys, trio
from dispatcher.core.store import Store
async def main():
    store = Store(sys.argv[1], map_size=64 << 20)
    async with trio.open_nursery() as n:
        await n.start(store.run_writer)
        store.fence(5)
        for _ in range(3):
            seq = await store.write(lambda txn: txn.next_seq(b"outbox", b"+1555\\x00"))
            await store.write(lambda txn: txn.put(b"meta", b"other-" + str(seq).encode(), b"v"))
        store.close()
    store.close_env()
trio.run(main)
"""


async def test_a_regained_bucket_allocates_past_the_owners_between(writer: Store, store_path: Path) -> None:
    """Seen in bench.cluster: a daemon that owned a bucket (epoch 4), lost it to another process
    (epoch 5, which allocated seqs 4-6) and gained it back (epoch 6) handed out 4-6 again from its
    cache: entries below the recovered actor's cursor, never sent. Its first commit under the new
    epoch resumes the sequences from disk."""
    writer.fence(4)
    assert [await writer.write(allocate(b"+1555\x00")) for _ in range(3)] == [1, 2, 3]
    await trio.run_process([sys.executable, "-c", _ANOTHER_OWNER_ALLOCATES, str(store_path)])
    assert writer.get(b"meta", b"other-6") == b"v"
    writer.fence(6)
    assert await writer.write(allocate(b"+1555\x00")) == 7
    assert await writer.write(allocate(b"+1555\x00")) == 8  # and cached again from there


async def test_an_outbox_seq_is_never_handed_out_twice(writer: Store) -> None:
    """The last line of defence: a write that would replace a waiting outbox entry (a seq handed
    out twice) is refused whole, and the entry that waited is still there."""
    await writer.write(lambda txn: outbox.put(txn, "+1555", 7, "+1666", b"first"))
    with pytest.raises(SeqTakenError):
        await writer.write(lambda txn: outbox.put(txn, "+1555", 7, "+1777", b"second"))
    assert writer.get(b"outbox", seq_key("+1555", 7)) == b"first"
    assert outbox.depth(writer, "+1555") == 1
