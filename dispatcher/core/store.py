"""The LMDB environment and its single group-committing writer.

Why this shape (measured on this machine, see bench/RESULTS.md): a durable
LMDB commit is an fsync (~0.3-0.7 ms) and a trio->thread hop costs ~100 us,
while an inline read is ~1 us. So reads run inline on the trio thread, and all
writes go to one long-lived writer thread that takes every queued write into one
transaction, begins and commits it with fsync there (py-lmdb write transactions
are bound to the thread that began them), wakes every waiter through the trio
token, and takes what was queued meanwhile at once. Callers that wait for the
same commit share its fsync. (``commit_in_thread=False``: a writer task commits
on the trio thread instead, for tests under ``MockClock``.)

Each queued write is a function run inside the shared transaction, in its own
nested transaction: a write that raises (e.g. an idempotency conflict) is
rolled back alone and its caller gets the exception; the others commit.

Epoch fencing: a Store is one bucket, and when several processes or hosts share
buckets (``dispatcher.ownership``), the bucket's owner ``fence``s its Store with the
epoch of its ownership. Every commit then checks the epoch recorded in the bucket
and writes its own, in the same transaction: a commit by an owner whose epoch was
overtaken (a stale owner, after a takeover) writes nothing and fails with
``StaleEpochError``. Unfenced (one daemon), commits carry no epoch.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final, Generic, TypeVar, cast, final

import attrs
import lmdb
import structlog
import trio

from dispatcher.core import datadir
from dispatcher.core.histogram import BATCH_BUCKETS, COMMIT_BUCKETS, Histogram
from dispatcher.core.keys import SEP as SEP
from dispatcher.core.keys import number_key as number_key  # importable from here, as before
from dispatcher.core.keys import seq_key as seq_key
from dispatcher.core.outbox import build_views

log = structlog.get_logger()

T = TypeVar("T")

# Named databases. Every key of a per-number DB starts with the number and a NUL,
# which sorts below every digit, so prefix scans never bleed across numbers.
DB_NAMES: Final = (
    b"messages",  # sid -> MessageRecord
    b"by_account",  # account NUL date_created(8B, ms) sid -> b"" : listing index, newest last
    b"outbox",  # number NUL seq(8B) -> OutboxEntry
    b"wamid",  # channel message id -> sid
    b"window",  # number NUL customer -> last inbound time
    b"tokens",  # number -> StoredToken
    b"idem",  # account NUL key -> idempotency record
    b"meta",  # everything else (orphan statuses, sequence high-water marks, ...)
    b"callbacks",  # origin NUL seq(8B) -> CallbackEntry : customer callbacks to deliver
    b"tier",  # number NUL recipient -> wall time counted against the Cloud messaging tier
    b"dedup",  # channel NUL event id -> expiry : webhook deliveries already processed
    b"scheduled",  # due time(8B, ms) sid -> number : scheduled messages, earliest first
    b"fallbacks",  # due time(8B, ms) sid -> reason : messages whose fallback may be due, earliest first
    b"numbers",  # number NUL kind -> what we know of the number at Meta (watch, onboarding)
    b"outbox_to",  # number NUL recipient NUL seq(8B) -> OutboxEntry : the outbox by recipient
    b"expiry",  # number NUL valid_until(8B, ms) seq(8B) -> sid : ValidityPeriods, earliest first
    b"started",  # number NUL seq(8B) -> wall ms : sends under way of at-most-once numbers (sendmarks)
)
SEQ_MARK: Final = b"seq" + SEP  # meta key prefix: db NUL prefix -> last seq ever allocated
EPOCH_KEY: Final = b"epoch"  # meta key: the epoch of the bucket's latest owner (8B big-endian)
FAILING_LOG_EVERY: Final = 60.0  # seconds between "still failing" lines while commits fail


class StoreError(Exception):
    """Base for storage failures the front door reports as 503."""


class StoreFullError(StoreError):
    """The LMDB map is full: nothing of the failed batch was written."""


class StoreClosedError(StoreError):
    """The writer no longer accepts writes (shutting down)."""


class SeqTakenError(StoreError):
    """An outbox seq handed out twice: the write is refused whole rather than replace a waiting
    entry (which would lose it). Sequences resume from disk when a bucket changes hands
    (``_commit``), so this is a bug's last line of defence, not an expected outcome."""


class StaleEpochError(StoreError):
    """The bucket has a newer owner than this process: nothing of the batch was written."""

    def __init__(self, ours: int, recorded: int) -> None:
        super().__init__(f"the bucket belongs to epoch {recorded}, this process holds epoch {ours}")
        self.ours = ours
        self.recorded = recorded


@final
class WriteTxn:
    """What a queued write function sees: the nested txn and the named DBs."""

    def __init__(
        self,
        txn: lmdb.Transaction,
        dbs: dict[bytes, lmdb._Database],
        seqs: dict[bytes, int],
        committed_seqs: dict[bytes, int],
    ) -> None:
        self.txn = txn
        self._dbs = dbs
        self._seqs = seqs  # allocated in this batch (this nested txn's copy)
        self._committed_seqs = committed_seqs  # floor from earlier commits

    def db(self, name: bytes) -> lmdb._Database:
        return self._dbs[name]

    def get(self, name: bytes, key: bytes) -> bytes | None:
        return cast("bytes | None", self.txn.get(key, db=self._dbs[name]))

    def put(self, name: bytes, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        ok: bool = self.txn.put(key, value, db=self._dbs[name], overwrite=overwrite)
        return ok

    def put_many(self, name: bytes, items: Iterable[tuple[bytes, bytes]], *, overwrite: bool = True) -> int:
        """``put`` of every (key, value) through one cursor, in one C loop; returns how many were added."""
        added: int = self.txn.cursor(db=self._dbs[name]).putmulti(items, overwrite=overwrite)[1]
        return added

    def delete(self, name: bytes, key: bytes) -> bool:
        ok: bool = self.txn.delete(key, db=self._dbs[name])
        return ok

    def pop(self, name: bytes, key: bytes) -> bytes | None:
        """Delete ``key`` and return its value (None: there was none)."""
        return cast("bytes | None", self.txn.pop(key, db=self._dbs[name]))

    def next_seq(self, name: bytes, prefix: bytes) -> int:
        """Allocate the next sequence under ``prefix`` (cached; resumed from disk once)."""
        ckey = name + SEP + prefix
        seq = self._seqs.get(ckey) or self._committed_seqs.get(ckey)
        if seq is None:
            # The last key alone is not enough: once its entry is consumed a restarted
            # process would hand out seqs again that an actor has already seen.
            mark = self.txn.get(SEQ_MARK + ckey, db=self._dbs[b"meta"])
            high = int.from_bytes(mark, "big") if mark else 0
            seq = max(_last_seq(self.txn, self._dbs[name], prefix), high) + 1
        self._seqs[ckey] = seq + 1
        return seq


def _last_seq(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes) -> int:
    cur = txn.cursor(db=db)
    found = cur.prev() if cur.set_range(prefix + b"\xff" * 8) else cur.last()
    key = cast(bytes, cur.key()) if found else b""
    return int.from_bytes(key[len(prefix) :], "big") if key.startswith(prefix) else 0


def _check_epoch(txn: lmdb.Transaction, meta: lmdb._Database, epoch: int) -> bool:
    """Fencing, inside the commit's transaction: refuse if a newer owner has written, else record
    ours. True when ours was not the epoch recorded: the bucket changed hands since our last commit
    under it, and another process may have written in between."""
    raw = txn.get(EPOCH_KEY, db=meta)
    recorded = 0 if raw is None else int.from_bytes(raw, "big")
    if recorded > epoch:
        raise StaleEpochError(epoch, recorded)
    if recorded < epoch:
        txn.put(EPOCH_KEY, epoch.to_bytes(8, "big"), db=meta)
        return True
    return False


@attrs.define(eq=False)
class _Pending(Generic[T]):
    fn: Callable[[WriteTxn], T]
    done: trio.Event = attrs.Factory(trio.Event)
    result: T | None = None
    error: BaseException | None = None


@final
class _Handoff:
    """Writes on their way to the writer thread: the trio thread puts, the writer thread takes them all."""

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._items: list[_Pending[object]] = []
        self._limit = limit
        self._closed = False

    def put(self, pending: _Pending[object]) -> bool:
        """Trio thread: False (nothing done) if ``limit`` writes already wait."""
        with self._cond:
            if len(self._items) >= self._limit:
                return False
            self._items.append(pending)
            self._cond.notify()
            return True

    def take(self) -> tuple[list[_Pending[object]], bool] | None:
        """Writer thread: every waiting write (blocks until one), and whether that was the limit
        (a caller may wait for room); None once closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            batch, self._items = self._items, []
            return (batch, len(batch) >= self._limit) if batch else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def __len__(self) -> int:
        return len(self._items)


@attrs.frozen
class StoreStatistics:
    commits: int
    writes: int
    last_batch: int
    max_batch_seen: int
    queued: int
    failed_commits: int = 0
    failing: bool = False  # the last commit failed


@final
class Store:
    """One LMDB environment (the data dir) with named DBs and one writer."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = 1 << 30,
        max_batch: int = 4096,
        commit_in_thread: bool = True,
        map_max: int | None = None,
    ) -> None:
        """``commit_in_thread=False`` commits on the trio thread: only for tests under
        ``MockClock``, where a thread hop would let the clock jump while it runs.
        ``map_max``: when the map is full, it doubles up to this size (None: it never grows)."""
        self._map_max = map_max
        data = Path(path)
        try:
            datadir.prepare(data)  # owner only: it holds bearer tokens
            probe = data / f".write-probe-{os.getpid()}"  # processes opening one bucket at once
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"data dir {data} is not writable: {exc.strerror}") from exc
        # sync/metasync: a commit returns only once on disk. Never writemap: a full
        # disk would then kill the process with SIGBUS instead of raising.
        self.env = lmdb.open(
            str(data),
            map_size=map_size,
            max_dbs=32,  # named DBs: DB_NAMES, with room for more
            sync=True,
            metasync=True,
            writemap=False,
            max_readers=256,
            mode=datadir.FILE_MODE,
        )
        self.env.reader_check()
        self._dbs = {name: self.env.open_db(name) for name in DB_NAMES}
        if built := build_views(self.env, self._dbs):  # a data dir from before the outbox's views
            log.warning("store.outbox_views_built", entries=built)
        self._seqs: dict[bytes, int] = {}
        self._epoch: int | None = None  # fence(): every commit checks and writes it
        self._max_batch = max_batch
        self._commit_in_thread = commit_in_thread
        self._send, self._recv = trio.open_memory_channel[_Pending[object]](max_batch)
        self._handoff = _Handoff(max_batch)  # replaced by the writer thread's, when it starts
        self._commits = 0
        self._writes = 0
        self._last_batch = 0
        self._max_batch_seen = 0
        self._failed_commits = 0
        # Monotonic time the commits started failing (None: the last one succeeded), last logged.
        self._failing_since: float | None = None
        self._failing_logged = 0.0
        # For /metrics: writes per group commit, and seconds per commit (begin to fsync).
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(COMMIT_BUCKETS)

    # -- reads: inline, ~1 us ------------------------------------------------------

    def get(self, name: bytes, key: bytes) -> bytes | None:
        with self.env.begin(db=self._dbs[name]) as txn:
            value = txn.get(key)
            return value

    def scan(
        self, name: bytes, prefix: bytes, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) copies under ``prefix`` in key order.

        The read txn is held while the caller iterates: do not await in between.
        """
        with self.env.begin(db=self._dbs[name]) as txn:
            cur = txn.cursor()
            if not cur.set_range(start if start is not None else prefix):
                return
            for key, value in cur:
                if not key.startswith(prefix):
                    return
                yield key, value

    def scan_back(
        self, name: bytes, prefix: bytes, *, below: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Like ``scan`` in descending key order, from just below ``below`` (or the last key).

        The read txn is held while the caller iterates: do not await in between.
        """
        upper = below if below is not None else prefix + b"\xff" * 64
        with self.env.begin(db=self._dbs[name]) as txn:
            cur = txn.cursor()
            found = cur.prev() if cur.set_range(upper) else cur.last()
            if not found:
                return
            for key, value in cur.iterprev():
                if not key.startswith(prefix):
                    return
                yield key, value

    @property
    def recorded_epoch(self) -> int:
        """The epoch of the bucket's latest owner, as committed (0: never fenced)."""
        raw = self.get(b"meta", EPOCH_KEY)
        return 0 if raw is None else int.from_bytes(raw, "big")

    @property
    def epoch(self) -> int | None:
        """The epoch this process's commits carry (None: unfenced)."""
        return self._epoch

    def fence(self, epoch: int | None) -> None:
        """Carry ``epoch`` in every commit from now on (None: stop fencing). A commit that finds a
        higher epoch recorded fails with ``StaleEpochError``; an equal or lower one is overwritten."""
        self._epoch = epoch

    def entries(self, name: bytes) -> int:
        """How many keys a named DB holds, from LMDB's own statistics (O(1), for /metrics)."""
        with self.env.begin() as txn:
            return int(txn.stat(self._dbs[name])["entries"])

    def count(self, name: bytes, prefix: bytes) -> int:
        return sum(1 for _ in self.scan(name, prefix))

    # -- writes: one writer, group commit ------------------------------------------

    async def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` inside the next group commit; return its result once durable.

        Raises what ``fn`` raised (its writes rolled back), StoreFullError, or
        StoreClosedError.
        """
        pending: _Pending[T] = _Pending(fn)
        try:
            await self._send.send(pending)  # type: ignore[arg-type]
        except trio.ClosedResourceError:
            raise StoreClosedError("the store is closed for writes") from None
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    async def run_writer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit queued writes until ``close()`` and the queue is drained."""
        task_status.started()
        if self._commit_in_thread:
            await self._run_writer_thread()
            return
        async for first in self._recv:
            batch = self._drain(first, self._max_batch)
            try:
                self._commit_or_fail(batch, self._grow)
                await trio.lowlevel.checkpoint()
            finally:
                for p in batch:
                    p.done.set()

    def _drain(self, first: _Pending[object], limit: int) -> list[_Pending[object]]:
        batch = [first]
        while len(batch) < limit:
            try:
                batch.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    async def _run_writer_thread(self) -> None:
        """Hand queued writes to one long-lived writer thread, which commits them back to back.

        The thread takes whatever was queued while its previous commit ran and commits
        it at once, and wakes the waiters through the trio token; a write that arrives
        during a commit so waits for that commit and its own, with no round trip through
        the trio thread (and no new thread start) in between.
        """
        token = trio.lowlevel.current_trio_token()
        finished = trio.Event()
        self._handoff = handoff = _Handoff(self._max_batch)
        room = trio.Event()

        def made_room() -> None:
            room.set()

        def wake(batch: list[_Pending[object]]) -> None:
            for p in batch:
                p.done.set()

        def grow() -> bool:
            return trio.from_thread.run_sync(self._grow, trio_token=token)

        def loop() -> None:
            try:
                while (taken := handoff.take()) is not None:
                    batch, was_full = taken
                    if was_full:  # only then can the trio side be waiting for room
                        token.run_sync_soon(made_room)
                    try:
                        self._commit_or_fail(batch, grow)
                    finally:
                        token.run_sync_soon(wake, batch)
            finally:
                token.run_sync_soon(finished.set)

        thread = threading.Thread(target=loop, name="wadispatch-store-writer", daemon=True)
        thread.start()
        try:
            async for first in self._recv:
                pending: _Pending[object] | None = first
                while pending is not None:  # one at a time: the rest stays counted in the queue
                    if not handoff.put(pending):
                        room = trio.Event()
                        if not handoff.put(pending):
                            await room.wait()
                            continue
                    try:
                        pending = self._recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        pending = None
        finally:
            # A commit already running always finishes, and so does what was handed off.
            handoff.close()
            with trio.CancelScope(shield=True):
                await finished.wait()
            thread.join()  # it only has to return: the env may be closed once this returns

    def _commit_or_fail(self, batch: list[_Pending[object]], grow: Callable[[], bool]) -> None:
        """Commit ``batch``; on failure every write in it gets the error (nothing of it was written)."""
        try:
            while True:
                try:
                    self._commit(batch)
                except lmdb.MapFullError:
                    if not grow():
                        raise
                    for p in batch:  # the whole batch was rolled back: run it again
                        p.error = p.result = None
                    continue
                break
        except StaleEpochError as exc:
            log.error("store.stale_epoch", ours=exc.ours, recorded=exc.recorded, batch=len(batch))
            for p in batch:
                p.error = exc
        except lmdb.MapFullError as exc:
            self._failed("store.map_full", batch, None, map_size=self.env.info()["map_size"])
            for p in batch:
                p.error = StoreFullError("storage is full")
                p.error.__cause__ = exc
        except Exception as exc:
            self._failed("store.commit_failed", batch, exc)
            for p in batch:
                p.error = StoreError(f"commit failed: {exc}")
                p.error.__cause__ = exc
        else:
            if self._failing_since is not None:
                log.warning(
                    "store.recovered",
                    failed_for=round(time.monotonic() - self._failing_since, 1),
                    failed_commits=self._failed_commits,
                )
                self._failing_since = None

    def _failed(
        self, event: str, batch: list[_Pending[object]], exc: Exception | None, **info: object
    ) -> None:
        """Count a failed commit; log it when commits start failing, then once a minute (writers
        retry while storage fails: one line per failed commit would flood the log)."""
        self._failed_commits += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._failing_logged = now
            log.error(event, batch=len(batch), exc_info=exc, **info)
        elif now - self._failing_logged >= FAILING_LOG_EVERY:
            self._failing_logged = now
            log.error(
                "store.still_failing",
                cause=event,
                error=None if exc is None else repr(exc),
                failed_commits=self._failed_commits,
                failing_for=round(now - self._failing_since, 1),
                **info,
            )

    def _grow(self) -> bool:
        """Double the map (up to ``map_max``) after a full one; False if it may not grow.

        Runs on the trio thread between commits: no write txn is open, and reads
        never hold a txn across a checkpoint, so none is open either.
        """
        size = int(self.env.info()["map_size"])
        if self._map_max is None or size >= self._map_max:
            return False
        new_size = min(self._map_max, size * 2)
        self.env.set_mapsize(new_size)
        log.warning("store.map_grown", from_mb=size >> 20, to_mb=new_size >> 20, max_mb=self._map_max >> 20)
        return True

    def close(self) -> None:
        """Stop accepting writes; the writer commits what is queued, then returns."""
        self._send.close()

    def close_env(self) -> None:
        """Close LMDB: only after every task and thread using it has finished."""
        self.env.close()

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            commits=self._commits,
            writes=self._writes,
            last_batch=self._last_batch,
            max_batch_seen=self._max_batch_seen,
            queued=self._recv.statistics().current_buffer_used + len(self._handoff),
            failed_commits=self._failed_commits,
            failing=self._failing_since is not None,
        )

    def _commit(self, batch: list[_Pending[object]]) -> None:
        """Worker thread: the whole transaction, begin to commit, happens here."""
        seqs: dict[bytes, int] = {}
        began = time.perf_counter()  # measures this thread's work, not trio time
        with self.env.begin(write=True) as txn:
            if (epoch := self._epoch) is not None and _check_epoch(txn, self._dbs[b"meta"], epoch):
                # The sequences cached from our earlier ownership are stale: the owners between
                # allocated past them. Handing them out again would put new outbox entries below
                # the cursor of the actor that recovers the bucket (it would never load them)
                # or over entries still waiting. Resume them from disk, inside this txn.
                self._seqs.clear()
            for p in batch:
                child = self.env.begin(write=True, parent=txn)
                child_seqs = dict(seqs)
                try:
                    p.result = p.fn(WriteTxn(child, self._dbs, child_seqs, self._seqs))
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except Exception as exc:
                    child.abort()
                    p.error = exc
                    continue
                child.commit()
                seqs = child_seqs
            # Sequences never go back, across restarts too: keep the high-water mark.
            meta = self._dbs[b"meta"]
            for ckey, upcoming in seqs.items():
                txn.put(SEQ_MARK + ckey, (upcoming - 1).to_bytes(8, "big"), db=meta)
        # Only after the commit succeeded do allocated sequences become the new floor.
        self._seqs.update(seqs)
        self._commits += 1
        self._writes += len(batch)
        self._last_batch = len(batch)
        self._max_batch_seen = max(self._max_batch_seen, len(batch))
        self.batch_sizes.observe(len(batch))
        self.commit_seconds.observe(time.perf_counter() - began)
