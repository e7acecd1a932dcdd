from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from dispatcher.core.store import SEP, Store, StoreClosedError, StoreError, StoreFullError, WriteTxn, seq_key


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "db", map_size=8 << 20, max_batch=64)
    yield s
    s.close_env()


def put(key: bytes, value: bytes):
    def fn(txn: WriteTxn) -> None:
        txn.put(b"meta", key, value)

    return fn


async def test_concurrent_writes_share_commits(store: Store) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        async with trio.open_nursery() as writers:
            for i in range(200):
                writers.start_soon(store.write, put(b"k%03d" % i, b"v%d" % i))
        store.close()
    stats = store.statistics()
    assert stats.writes == 200
    assert stats.commits < 200  # group commit: waiters shared fsyncs
    assert store.get(b"meta", b"k007") == b"v7"
    assert store.count(b"meta", b"k") == 200


async def test_a_failing_write_rolls_back_alone(store: Store) -> None:
    def bad(txn: WriteTxn) -> None:
        txn.put(b"meta", b"half", b"written")
        raise KeyError("conflict")

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        results: dict[str, object] = {}

        async def run(name: str, fn) -> None:
            try:
                results[name] = await store.write(fn)
            except KeyError as exc:
                results[name] = exc

        async with trio.open_nursery() as writers:
            writers.start_soon(run, "good1", put(b"a", b"1"))
            writers.start_soon(run, "bad", bad)
            writers.start_soon(run, "good2", put(b"b", b"2"))
        store.close()
    assert isinstance(results["bad"], KeyError)
    assert store.get(b"meta", b"half") is None
    assert store.get(b"meta", b"a") == b"1"
    assert store.get(b"meta", b"b") == b"2"


async def test_sequences_resume_from_disk_and_skip_rolled_back(tmp_path: Path) -> None:
    def append(number: str, fail: bool = False):
        def fn(txn: WriteTxn) -> int:
            seq = txn.next_seq(b"outbox", number.encode() + SEP)
            txn.put(b"outbox", seq_key(number, seq), b"x")
            if fail:
                raise ValueError("rolled back")
            return seq

        return fn

    s = Store(tmp_path / "db", map_size=8 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(s.run_writer)
        assert [await s.write(append("+1555")) for _ in range(3)] == [1, 2, 3]
        assert await s.write(append("+15551")) == 1  # no prefix bleed
        with pytest.raises(ValueError):
            await s.write(append("+1555", fail=True))
        assert await s.write(append("+1555")) in (4, 5)
        s.close()
    s.close_env()
    s2 = Store(tmp_path / "db", map_size=8 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(s2.run_writer)
        last = max(int.from_bytes(k[-8:], "big") for k, _ in s2.scan(b"outbox", b"+1555" + SEP))
        assert await s2.write(append("+1555")) == last + 1
        s2.close()
    s2.close_env()


async def test_sequences_never_go_back_once_their_entries_are_consumed(tmp_path: Path) -> None:
    """An actor dedups notifications by seq: a restarted process that reused seqs of
    delivered (deleted) entries would have its new messages ignored until the next restart."""

    def append(txn: WriteTxn) -> int:
        seq = txn.next_seq(b"outbox", b"+1555" + SEP)
        txn.put(b"outbox", seq_key("+1555", seq), b"x")
        return seq

    def consume_all(txn: WriteTxn) -> None:
        for seq in range(1, 4):
            txn.delete(b"outbox", seq_key("+1555", seq))

    s = Store(tmp_path / "db", map_size=8 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(s.run_writer)
        assert [await s.write(append) for _ in range(3)] == [1, 2, 3]
        await s.write(consume_all)
        s.close()
    s.close_env()
    s2 = Store(tmp_path / "db", map_size=8 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(s2.run_writer)
        assert list(s2.scan(b"outbox", b"+1555" + SEP)) == []
        assert await s2.write(append) == 4
        s2.close()
    s2.close_env()


async def test_map_full_fails_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", map_size=1 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(s.run_writer)
        with pytest.raises(StoreFullError):
            await s.write(put(b"big", os.urandom(4 << 20)))
        assert s.get(b"meta", b"big") is None
        await s.write(put(b"small", b"ok"))  # the store keeps working
        s.close()
    assert s.get(b"meta", b"small") == b"ok"
    s.close_env()


async def test_writes_after_close_are_refused(store: Store) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        store.close()
    with pytest.raises(StoreClosedError):
        await store.write(put(b"late", b"x"))


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="not writable"):
        Store(blocker / "db")


async def test_a_full_map_grows_up_to_its_maximum(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", map_size=1 << 20, map_max=16 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(s.run_writer)
        await s.write(put(b"big", os.urandom(3 << 20)))  # grew 1 -> 2 -> 4 MiB, then fits
        assert s.env.info()["map_size"] == 4 << 20
        with pytest.raises(StoreFullError):  # beyond the maximum: refused, nothing written
            await s.write(put(b"huge", os.urandom(20 << 20)))
        assert s.get(b"meta", b"huge") is None and s.env.info()["map_size"] == 16 << 20
        s.close()
    assert s.get(b"meta", b"big") is not None
    s.close_env()


async def test_writes_queued_during_a_commit_share_the_next_and_batches_stay_bounded(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", map_size=8 << 20, max_batch=4)
    entered, release = threading.Event(), threading.Event()

    def first(txn: WriteTxn) -> None:  # runs in the writer thread: holds its commit open
        entered.set()
        release.wait()
        txn.put(b"meta", b"first", b"1")

    async with trio.open_nursery() as nursery:
        await nursery.start(s.run_writer)
        nursery.start_soon(s.write, first)
        await trio.to_thread.run_sync(entered.wait)
        async with trio.open_nursery() as writers:
            for i in range(10):
                writers.start_soon(s.write, put(b"k%02d" % i, b"v"))
            await trio.testing.wait_all_tasks_blocked()
            queued = s.statistics().queued
            release.set()
        s.close()
    # 4 handed to the writer thread, 1 on its way there, 4 in the queue, 1 caller waits for room.
    assert queued == 8
    stats = s.statistics()
    assert (stats.writes, stats.commits, stats.max_batch_seen) == (11, 4, 4)  # 1, then 4 + 4 + 2
    assert s.count(b"meta", b"k") == 10 and s.get(b"meta", b"first") == b"1"
    s.close_env()


async def test_a_cancelled_writer_finishes_its_commit_and_leaves_no_thread(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", map_size=8 << 20)
    entered, release = threading.Event(), threading.Event()

    def slow(txn: WriteTxn) -> None:
        entered.set()
        release.wait()
        txn.put(b"meta", b"slow", b"done")

    async with trio.open_nursery() as nursery:
        await nursery.start(s.run_writer)
        nursery.start_soon(s.write, slow)
        await trio.to_thread.run_sync(entered.wait)
        nursery.cancel_scope.cancel()
        release.set()
    assert not any(t.name == "wadispatch-store-writer" for t in threading.enumerate())
    assert s.get(b"meta", b"slow") == b"done"  # durable: the commit ran to its end
    s.close_env()
