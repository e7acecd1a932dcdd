"""At-most-once across a sender's death: ``on_ambiguous = "fail"`` numbers mark each send durably.

A "process death" here is the actor's whole task tree cancelled while the fake API
holds a request, then a new actor (a new ``Unrecorded``: nothing in memory survives)
recovering the same real LMDB store, as a restarted daemon or a bucket's next owner
does. ``FakeApi.attempts`` records a request the moment it arrives: what reached the
API. MockClock throughout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import final

import pytest
import structlog
import trio
import trio.testing

from actors.policy import AMBIGUOUS_FAILED, AmbiguousPolicy
from actors.transport import ConnectError, ResponseLostError
from actors.unrecorded import Unrecorded
from dispatcher.core import callbacks, ledger, sendmarks
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store, StoreFullError, WriteTxn, number_key
from tests.helpers import messages
from tests.helpers.actors import ACCOUNT, NUMBER, onprem_actor, submit
from tests.helpers.fakes import FakeApi, error
from tests.helpers.messages import record_of

wait_for = functools.partial(messages.wait_for, timeout=600.0)
TO = "+15551230000"
CALLBACK = "https://hooks.example.com/status"


accept = functools.partial(submit, status_callback=CALLBACK)
"""A message with a status callback, stored and handed to the actor given."""


def marks(store: Store) -> list[int]:
    return [mark.seq for mark in sendmarks.read(store, NUMBER)]


def callback_statuses(store: Store, sid: str) -> list[str]:
    found = []
    for _, raw in store.scan(callbacks.DB, b""):
        entry = callbacks.entry_decoder.decode(raw)
        if entry.sid == sid:
            found += [value for name, value in entry.params if name == "MessageStatus"]
    return found


async def die_while_in_flight(store: Store, on_ambiguous: AmbiguousPolicy) -> tuple[MessageRecord, FakeApi]:
    """Run an actor until its API holds a send, then cancel everything it runs."""
    actor, api, _ = onprem_actor(store, latency=60.0, on_ambiguous=on_ambiguous)
    with trio.CancelScope() as process:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            record = await accept(store, actor, TO, "cut off")
            await wait_for(lambda: api.in_flight == 1)
            process.cancel()  # kill -9: nothing of the actor survives but what LMDB holds
    return record, api


async def test_a_fail_number_s_send_cut_off_by_its_death_fails_as_ambiguous_and_is_not_sent_again(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    record, before = await die_while_in_flight(writer, "fail")
    assert len(before.attempts) == 1 and marks(writer) == [record.outbox_seq]

    successor, after, _ = onprem_actor(writer, on_ambiguous="fail")
    with structlog.testing.capture_logs() as logs:
        await nursery.start(successor.run)
        await wait_for(lambda: record_of(writer, record.sid).status == "failed")
    failed = record_of(writer, record.sid)
    assert (failed.error_code, failed.error_message) == AMBIGUOUS_FAILED  # as a lost answer at run time
    await trio.sleep(60.0)
    assert after.attempts == []  # at most once: never sent again
    assert marks(writer) == [] and writer.count(b"outbox", number_key(NUMBER)) == 0
    assert callback_statuses(writer, record.sid) == ["failed"]
    stats = successor.statistics()
    assert (stats.ambiguous, stats.failed, stats.failed_by_code) == (1, 1, ((30008, 1),))
    ambiguous = [e for e in logs if e["event"] == "send.ambiguous"]
    assert len(ambiguous) == 1
    assert ambiguous[0]["sid"] == record.sid and ambiguous[0]["number"] == NUMBER
    assert ambiguous[0]["policy"] == "fail" and ambiguous[0]["reason"] == "interrupted"


async def test_a_message_cut_off_mid_send_is_no_longer_cancelable(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    """Between the kill and its recovery the message may have gone out: a cancel must not say
    ``canceled``; its number's next actor fails it as ambiguous."""
    record, _ = await die_while_in_flight(writer, "fail")
    with pytest.raises(ledger.WrongState):
        await writer.write(ledger.cancel(record.sid, ACCOUNT, 1_700_000_100.0))
    assert record_of(writer, record.sid).status == "queued" and marks(writer) == [record.outbox_seq]
    untouched = await submit(writer, None, TO, "not started")  # no mark: cancelable as ever
    assert (await writer.write(ledger.cancel(untouched.sid, ACCOUNT, 1_700_000_100.0))).status == "canceled"


async def test_a_retry_number_writes_no_mark_and_sends_a_cut_off_message_again(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    writes = writer.statistics().writes
    record, _ = await die_while_in_flight(writer, "retry")
    assert marks(writer) == []
    assert writer.statistics().writes == writes + 2  # the token's login, the accept: no mark

    successor, after, _ = onprem_actor(writer)
    await nursery.start(successor.run)
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert len(after.attempts) == 1  # at least once: sent again
    assert successor.statistics().ambiguous == 0


async def test_marks_cost_fail_numbers_one_write_per_send_and_concurrent_marks_share_commits(
    tmp_path: Path,
) -> None:
    """Real time and the real writer thread (fsync): marks queued while a commit runs go in the next."""
    store = Store(tmp_path / "threaded", map_size=64 << 20)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run_writer)
                actor, api, _ = onprem_actor(store, latency=0.5, on_ambiguous="fail", max_in_flight=32)
                await nursery.start(actor.run)
                await wait_for(lambda: actor.credentials.ready)
                records = [await submit(store, None, f"+1555123{i:04d}", "x") for i in range(32)]
                commits, writes = store.statistics().commits, store.statistics().writes
                for r in records:
                    assert r.outbox_seq is not None
                    actor.notify(r.outbox_seq, r)
                await wait_for(lambda: api.in_flight == 32)
                assert sorted(marks(store)) == [r.outbox_seq for r in records]
                stats = store.statistics()
                assert stats.writes - writes == 32  # one mark per send
                assert stats.commits - commits < 32  # marks queued together shared a commit
                await wait_for(lambda: all(record_of(store, r.sid).status == "sent" for r in records))
                assert marks(store) == []  # each cleared by the commit that recorded its 'sent'
                actor.stop()
                store.close()
    finally:
        store.close_env()


async def test_a_definite_non_delivery_clears_the_mark_before_the_backoff(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    actor, api, _ = onprem_actor(writer, on_ambiguous="fail")
    api.script = lambda msg, n: error(503, 1, "Service unavailable") if n == 1 else None
    with trio.CancelScope() as process:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            record = await submit(writer, actor, TO, "hello")
            await wait_for(lambda: actor.statistics().retries == 1)  # backing off
            assert marks(writer) == [] and len(api.attempts) == 1
            process.cancel()  # dies while backing off: the 503 said it was not sent

    successor, after, _ = onprem_actor(writer, on_ambiguous="fail")
    async with trio.open_nursery() as nursery:
        await nursery.start(successor.run)
        await wait_for(lambda: record_of(writer, record.sid).status == "sent")
        successor.stop()
    assert len(after.attempts) == 1 and successor.statistics().ambiguous == 0


async def test_a_refused_connection_is_retried_and_a_lost_answer_fails_at_run_time(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer, on_ambiguous="fail")
    scripted = {1: ConnectError("refused"), 2: ResponseLostError("lost")}
    api.script = lambda msg, n: scripted.get(n)
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "failed")
    assert len(api.attempts) == 2 and (
        record_of(writer, record.sid).error_code,
        actor.statistics().ambiguous,
    ) == (
        30008,
        1,
    )
    assert marks(writer) == []


async def test_an_answer_held_unrecorded_is_committed_at_recovery_not_failed(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    """The actor crashed after the answer came, before its 'sent' committed: the same process's
    next actor has the answer (``Unrecorded``), so the send is not ambiguous."""
    record = await submit(writer, None, TO, "answered")
    seq = record.outbox_seq
    assert seq is not None
    await writer.write(sendmarks.mark(NUMBER, seq, 1_700_000_000.0))
    held = Unrecorded()
    held.begin(seq, ledger.mark_sent(NUMBER, seq, record.sid, "wamid.held", 1_700_000_001.0, started=True))
    held.stall(seq, record.sid)  # as an interrupted first commit leaves it
    successor, api, _ = onprem_actor(writer, on_ambiguous="fail", unrecorded=held)
    await nursery.start(successor.run)
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert record_of(writer, record.sid).channel_id == "wamid.held"
    assert api.attempts == [] and successor.statistics().ambiguous == 0 and marks(writer) == []


async def test_marks_left_over_are_cleared_and_under_retry_the_message_is_sent_again(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    """A mark whose entry left the outbox is cleared; a mark left while the number was ``fail``,
    recovered under ``retry`` (a config change), is counted ambiguous and sent again."""
    pending = await submit(writer, None, TO, "pending")
    assert pending.outbox_seq is not None
    await writer.write(sendmarks.mark(NUMBER, pending.outbox_seq, 1_700_000_000.0))
    await writer.write(sendmarks.mark(NUMBER, 999, 1_700_000_000.0))  # its entry is long gone
    actor, api, _ = onprem_actor(writer)
    with structlog.testing.capture_logs() as logs:
        await nursery.start(actor.run)
        await wait_for(lambda: record_of(writer, pending.sid).status == "sent")
    assert len(api.attempts) == 1 and actor.statistics().ambiguous == 1 and marks(writer) == []
    ambiguous = [e for e in logs if e["event"] == "send.ambiguous"]
    assert [(e["sid"], e["policy"]) for e in ambiguous] == [(pending.sid, "retry")]


async def test_storage_refusing_the_mark_sends_nothing_until_it_takes_it(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = writer.write
    refused: list[str] = []

    async def write(fn: Callable[[WriteTxn], object]) -> object:
        if fn.__qualname__.startswith("mark.") and len(refused) < 3:
            refused.append(fn.__qualname__)
            raise StoreFullError("storage is full")
        return await real(fn)

    actor, api, _ = onprem_actor(writer, on_ambiguous="fail")
    await nursery.start(actor.run)
    await wait_for(lambda: actor.credentials.ready)
    monkeypatch.setattr(writer, "write", write)
    record = await submit(writer, actor, TO, "hello")
    await wait_for(lambda: len(refused) == 1)
    assert actor.storage_failing and api.attempts == []  # no send without its mark
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert len(refused) == 3 and len(api.attempts) == 1 and marks(writer) == []
    assert actor.statistics().storage_failures == 3


@final
class ClosingLease:
    """Open until the first ``close_after`` asks, then closed until ``renew``."""

    def __init__(self, close_after: int) -> None:
        self.asks = 0
        self.close_after = close_after
        self.until = math.inf
        self.waiting = False
        self._renewed = trio.Event()

    def send_until(self) -> float:
        self.asks += 1
        if self.asks > self.close_after and self.until == math.inf:
            self.until = 0.0
        return self.until

    async def wait_open(self) -> None:
        self.waiting = True
        while trio.current_time() >= self.until:
            await self._renewed.wait()
        self.waiting = False

    def renew(self) -> None:
        self.until = math.inf
        self.close_after = 1 << 30
        self._renewed.set()


async def test_a_lease_lapsing_while_the_mark_commits_clears_it_and_sends_nothing_until_renewed(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    lease = ClosingLease(close_after=1)  # asked before the mark (open), then after it (lapsed)
    actor, api, _ = onprem_actor(writer, on_ambiguous="fail", lease=lease)
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello")
    await wait_for(lambda: lease.waiting)
    await trio.sleep(30.0)
    assert api.attempts == [] and marks(writer) == []  # the bucket may go elsewhere now: no mark left
    lease.renew()
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert len(api.attempts) == 1 and marks(writer) == []
