"""OutcomeRecorder: commits what a number's sends came to, and holds it while storage fails.

A send's answer is held in ``Unrecorded`` (which outlives the actor) from before its
write until the commit. Storage that refuses a write (map or disk full, I/O error)
puts the number in *storage failing*: its actor starts no new send (it waits for
``recovery``), and a retrier commits the held outcomes with backoff, nothing else
written meanwhile, until storage takes them all. A restart commits held outcomes
instead of sending those messages again.

A write that fails by itself (not storage: it can never commit) is replaced by one
that only takes the entry out of the outbox, so the message is never sent again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, final

import attrs
import structlog
import trio

from actors.unrecorded import Outcome, OutcomeWrite, Unrecorded
from dispatcher.core import outbox, sendmarks
from dispatcher.core.store import Store, StoreError, WriteTxn

log = structlog.get_logger()

# While storage fails: seconds between tries to commit what is held (full jitter above half),
# doubling to the cap; and how often "still failing" is logged.
STORAGE_RETRY_BASE: Final = 0.5
STORAGE_RETRY_CAP: Final = 10.0
STORAGE_LOG_EVERY: Final = 60.0


def storage_delay(attempt: int) -> float:
    """Seconds before try ``attempt`` while storage fails: doubling to a cap, jittered above half."""
    delay = min(STORAGE_RETRY_CAP, STORAGE_RETRY_BASE * 2 ** (attempt - 1))
    return random.uniform(delay / 2, delay)


@final
class OutcomeRecorder:
    """One number's writes of outcomes (and of the few other things its sends write), with
    what to do while storage refuses them. ``on_recovered`` is called once storage records
    again (the actor wakes its dispatcher)."""

    __slots__ = (
        "_logged",
        "_number",
        "_nursery",
        "_on_recovered",
        "_recommitting",
        "_since",
        "_store",
        "error",
        "failures",
        "recovery",
        "unrecorded",
    )

    def __init__(
        self, *, number: str, store: Store, unrecorded: Unrecorded, on_recovered: Callable[[], None]
    ) -> None:
        self._number = number
        self._store = store
        self.unrecorded = unrecorded
        self._on_recovered = on_recovered
        # While storage fails (None otherwise): set once what was held is committed. Read on
        # every send, so a plain attribute rather than a property.
        self.recovery: trio.Event | None = None
        self._since = self._logged = 0.0  # trio times: failing since, last logged
        self.error: str | None = None  # the last storage error (kept until storage recovers)
        self.failures = 0  # writes that storage could not commit
        self._recommitting = False  # the retrier runs
        self._nursery: trio.Nursery | None = None  # while the actor dispatches: where the retrier runs

    def open(self, nursery: trio.Nursery) -> None:
        """The actor dispatches: retriers run in ``nursery`` (its sends nursery, so a stop waits
        for them) until ``close``. Outcomes an earlier run left held are committed now, never
        sent again; storage still failing is probed until it takes a write."""
        self._nursery = nursery
        if (self.unrecorded or self.recovery is not None) and not self._recommitting:
            self._start_recommit(at_once=True)

    def close(self) -> None:
        """The actor stopped dispatching: the next ``open`` starts what is left."""
        self._nursery = None

    async def record(self, seq: int, sid: str, write: OutcomeWrite) -> None:
        """Commit ``write``, the outcome of outbox entry ``seq``. Never raises a storage failure:
        the outcome is held from before its write until it is committed, whatever happens in
        between; while storage fails it is retried with backoff and this waits."""
        self.unrecorded.begin(seq, write)
        try:
            await self._store.write(write)
        except BaseException as exc:
            await self.first_write_failed(seq, sid, exc)
        else:
            self.unrecorded.recorded(seq)

    async def first_write_failed(self, seq: int, sid: str, exc: BaseException) -> None:
        """The first commit of ``seq``'s outcome (held by ``record`` or by the caller's inline
        copy of it) raised ``exc``: hand the outcome to the retrier and wait until it is
        recorded (storage), or drop the entry (a write that cannot commit), or re-raise
        (cancelled: the outcome stays held, and the next run commits it)."""
        outcome = self.unrecorded.stall(seq, sid)
        if isinstance(exc, StoreError):
            self._failed(exc)
        elif not isinstance(exc, Exception):
            raise exc
        elif await self._commit(outcome):  # it cannot be written: _commit drops the entry instead
            return
        await self.unrecorded.wait_recorded(outcome)

    async def try_write(self, write: OutcomeWrite) -> bool:
        """One write that is not an outcome (a tier count): False if storage failed (the number
        is then failing storage like for an outcome; the caller undoes what it counted)."""
        try:
            await self._store.write(write)
        except StoreError as exc:
            self._failed(exc)
            return False
        return True

    async def _commit(self, outcome: Outcome) -> bool:
        """One try at committing a held outcome: True once it is recorded, False if storage failed."""
        outcome.writing = True
        try:
            while True:
                try:
                    await self._store.write(outcome.write)
                except StoreError as exc:
                    self._failed(exc)
                    return False
                except Exception as exc:
                    if isinstance(outcome.write, _DropEntry):
                        raise  # not even that: a bug
                    log.error(
                        "outcome.unwritable",
                        sid=outcome.sid,
                        seq=outcome.seq,
                        error=repr(exc),
                        effect="the message leaves the outbox (never sent again); its record is not updated",
                    )
                    outcome.write = _DropEntry(self._number, outcome.seq)
                    continue
                self.unrecorded.recorded(outcome.seq)
                return True
        finally:
            outcome.writing = False

    def _failed(self, exc: StoreError) -> None:
        """Storage could not commit a write of ours: no new send until it can again."""
        self.failures += 1
        self.error = str(exc)
        now = trio.current_time()
        if self.recovery is None:
            self.recovery = trio.Event()
            self._since = self._logged = now
            log.error("storage.failing", error=self.error, unrecorded=len(self.unrecorded))
        elif now - self._logged >= STORAGE_LOG_EVERY:
            self._logged = now
            log.error(
                "storage.still_failing",
                error=self.error,
                unrecorded=len(self.unrecorded),
                failing_for=round(now - self._since, 1),
                failures=self.failures,
            )
        if not self._recommitting:
            self._start_recommit(at_once=False)

    def _start_recommit(self, *, at_once: bool) -> None:
        if self._nursery is None:
            return  # not dispatching: the next open() starts it
        self._recommitting = True
        self._nursery.start_soon(self._recommit, at_once)

    async def _recommit(self, at_once: bool) -> None:
        """Commit the held outcomes nobody is committing, with backoff, until storage takes them
        all; then sending resumes. A cancel (a drain deadline) leaves what is not committed held."""
        # Started from a send's task: log with the number only, not that send's sid.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(number=self._number)
        try:
            attempt = 0
            while True:
                if attempt or not at_once:
                    await trio.sleep(storage_delay(attempt + 1))
                attempt += 1
                outcomes = self.unrecorded.idle()
                if outcomes:
                    if not await self._commit_all(outcomes):
                        continue
                elif self.recovery is not None and not await self.try_write(_probe_write(self._number)):
                    continue  # nothing held (a tier count failed): storage must take a write first
                if not self.unrecorded.idle():
                    break
        finally:
            self._recommitting = False
        self._recovered()

    async def _commit_all(self, outcomes: list[Outcome]) -> bool:
        """Try every outcome at once (one group commit); True if storage took them all."""
        results: list[bool] = []

        async def commit(outcome: Outcome) -> None:
            results.append(await self._commit(outcome))

        async with trio.open_nursery() as nursery:
            for outcome in outcomes:
                nursery.start_soon(commit, outcome)
        return all(results)

    def _recovered(self) -> None:
        down = self.recovery
        if down is None:
            return
        log.warning(
            "storage.recovered",
            failed_for=round(trio.current_time() - self._since, 1),
            failures=self.failures,
        )
        self.recovery = None
        self.error = None
        down.set()
        self._on_recovered()


@attrs.frozen
class _DropEntry:
    """The write that replaces an outcome that cannot be written: the entry leaves the outbox."""

    number: str
    seq: int

    def __call__(self, txn: WriteTxn) -> None:
        sendmarks.clear(txn, self.number, self.seq)
        outbox.remove(txn, self.number, self.seq)


def _probe_write(number: str) -> OutcomeWrite:
    """A write that touches pages and leaves nothing: does storage take writes again?"""
    key = b"probe" + b"\x00" + number.encode()

    def write(txn: WriteTxn) -> None:
        txn.put(b"meta", key, b"")
        txn.delete(b"meta", key)

    return write


__all__ = ["OutcomeRecorder", "storage_delay"]
