"""A backlog bigger than the window, under MockClock: the actor holds a bounded window of its
outbox in memory and refills it from LMDB in order; waiting recipients do not fill it; cancel,
ValidityPeriod and restarts work on messages that were never loaded."""

from __future__ import annotations

import functools
from collections import defaultdict

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.pacing.pairrate import PairLimiter
from dispatcher.core import ledger, outbox
from dispatcher.core.bucketing import slot_of
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.store import Store, number_key
from tests.helpers import messages
from tests.helpers.actors import ACCOUNT, NUMBER, cloud_actor, submit
from tests.helpers.messages import record_of

wait_for = functools.partial(messages.wait_for, timeout=86_400.0)
WINDOW = 16


def record(to: str, body: str = "hi", valid_until: float | None = None) -> MessageRecord:
    return MessageRecord(
        sid=new_sid("SM", slot_of(NUMBER)),
        account_sid=ACCOUNT,
        from_number=NUMBER,
        to_number=to,
        body=body,
        valid_until=valid_until,
    )


async def backlog(store: Store, recipients: list[str]) -> list[MessageRecord]:
    """One message to each of ``recipients`` in turn, committed in one batch, no actor told."""
    records = [record(to, f"m{i}") for i, to in enumerate(recipients)]
    await store.write(ledger.accept_many(records))
    return records


def sent_bodies(store: Store, records: list[MessageRecord]) -> dict[str, list[tuple[float, int]]]:
    """Per recipient: (date_sent, acceptance index) of each sent message."""
    out: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for index, rec in enumerate(records):
        stored = record_of(store, rec.sid)
        if stored.status == "sent":
            assert stored.date_sent is not None
            out[rec.to_number].append((stored.date_sent, index))
    return out


def in_acceptance_order(store: Store, records: list[MessageRecord]) -> bool:
    return all(
        [index for _, index in sorted(sent)] == sorted(index for _, index in sent)
        for sent in sent_bodies(store, records).values()
    )


async def test_the_window_is_bounded_and_refilled_from_the_outbox_in_order(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    recipients = [f"+155520000{i % 7:02d}" for i in range(300)]
    records = await backlog(writer, recipients)
    actor, api = cloud_actor(writer, rate=50.0, burst=1, window=WINDOW)
    await nursery.start(actor.run)
    assert actor.statistics().window == WINDOW and actor.statistics().pending == 300
    peak = 0
    # Messages accepted while the window is full are committed and counted, not held.
    late = [await submit(writer, actor, recipients[i]) for i in range(20)]
    assert actor.statistics().window <= WINDOW and actor.statistics().accepted == 20
    assert actor.statistics().pending == 320 - len(api.sent)
    while len(api.sent) < 320:
        peak = max(peak, actor.statistics().window)
        await trio.sleep(0.05)
    assert peak <= WINDOW
    assert in_acceptance_order(writer, records + late)
    assert actor.statistics().pending == 0 and writer.count(b"outbox", number_key(NUMBER)) == 0
    assert writer.count(outbox.BY_RECIPIENT, number_key(NUMBER)) == 0


async def test_a_parked_recipient_does_not_fill_the_window_nor_block_the_others(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    chatty = "+15552999999"
    others = [f"+155530{i:05d}" for i in range(40)]
    records = await backlog(writer, [chatty] * 100 + others)  # the chatty one's messages come first
    actor, api = cloud_actor(writer, rate=80.0, burst=80, pair=PairLimiter(6.0, 2, margin=0.0), window=WINDOW)
    start = trio.current_time()
    await nursery.start(actor.run)
    await wait_for(lambda: len(api.sent) == 42)  # the chatty one's burst of 2, and every other
    assert trio.current_time() - start < 2.0  # 40 others at 80/s: the chatty one held none up
    assert sum(record_of(writer, r.sid).status == "sent" for r in records[:100]) == 2
    assert actor.statistics().window <= WINDOW and actor.statistics().parked == 1
    await trio.sleep(60.0)  # then it goes on at its pair rate, in order
    assert in_acceptance_order(writer, records)
    assert actor.statistics().pending == 100 - (len(api.sent) - 40)


async def test_cancel_of_a_message_still_on_disk(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    records = await backlog(writer, [f"+155540000{i % 3:02d}" for i in range(100)])
    actor, api = cloud_actor(writer, rate=10.0, burst=1, window=WINDOW)
    actor.pause()
    await nursery.start(actor.run)
    victim = records[80]
    assert actor.hold(victim.sid)  # as the gateway's cancel does
    try:
        canceled = await writer.write(ledger.cancel(victim.sid, ACCOUNT, 0.0))
    finally:
        actor.release(victim.sid)
    assert canceled.status == "canceled" and actor.statistics().pending == 99
    actor.resume()
    await wait_for(lambda: len(api.sent) == 99)
    await trio.sleep(5.0)
    assert len(api.sent) == 99 and record_of(writer, victim.sid).status == "canceled"
    assert in_acceptance_order(writer, records) and actor.statistics().pending == 0


async def test_a_message_never_loaded_expires_on_time_and_durably(
    autojump_clock: trio.testing.MockClock, store: Store
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        first = await backlog(store, [f"+155550000{i % 4:02d}" for i in range(100)])
        valid = [
            record("+15555000100", "soon", wall.now() + 10.0),
            record("+15555000101", "later", wall.now() + 40.0),
        ]
        await store.write(ledger.accept_many(valid))
        actor, api = cloud_actor(store, rate=2.0, burst=1, window=WINDOW, wall=wall)
        await nursery.start(actor.run)
        await trio.sleep(10.5)
        soon = record_of(store, valid[0].sid)
        assert soon.status == "failed" and soon.error_code == 30036  # at its time, never loaded
        assert len(api.sent) < 30 and actor.statistics().failed == 1
        assert record_of(store, valid[1].sid).status == "queued"
        actor.stop()  # a restart before the second expires: the index is durable
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        await trio.sleep(60.0)  # no actor running: it expires when the next one starts
        again, api = cloud_actor(store, rate=2.0, burst=1, window=WINDOW, wall=wall)
        await nursery.start(again.run)
        await trio.sleep(0.1)
        later = record_of(store, valid[1].sid)
        assert later.status == "failed" and later.error_code == 30036
        assert store.count(outbox.EXPIRY, b"") == 0
        assert all(record_of(store, r.sid).status in ("queued", "sent") for r in first)
        again.stop()
        nursery.cancel_scope.cancel()


async def test_restart_with_a_full_backlog_reads_only_the_window(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    recipients = [f"+15556{i % 50:06d}" for i in range(5000)]
    records = await backlog(writer, recipients)
    wall = TrioWallClock(start=1_700_000_000.0)  # one wall for both runs: date_sent compares across them
    actor, api = cloud_actor(writer, rate=100.0, burst=1, window=64, wall=wall)
    await nursery.start(actor.run)
    assert actor.statistics().window == 64 and actor.statistics().pending == 5000
    await wait_for(lambda: len(api.sent) >= 500)
    actor.stop()
    await wait_for(lambda: not actor.serving)
    sent_before = len(api.sent)
    again, api_again = cloud_actor(writer, rate=100.0, burst=1, window=64, wall=wall)
    await nursery.start(again.run)
    assert again.statistics().window == 64
    assert again.statistics().pending == 5000 - sent_before
    await wait_for(lambda: again.statistics().pending == 0)
    assert len(api.sent) + len(api_again.sent) == 5000  # none twice, none lost
    assert in_acceptance_order(writer, records)
    again.stop()


def test_a_data_dir_from_before_the_views_gets_them_when_it_opens(tmp_path: object) -> None:
    path = f"{tmp_path}/data"
    store = Store(path, map_size=64 << 20, commit_in_thread=False)
    env = store.env
    dbs = {name: env.open_db(name) for name in (b"messages", b"outbox", b"outbox_to", b"expiry", b"meta")}
    with env.begin(write=True) as txn:  # as an older version left it: entries only, no views
        for seq in range(1, 6):
            rec = record(f"+1555700000{seq % 2}", valid_until=1_800_000_000.0 if seq == 3 else None)
            rec.outbox_seq = seq
            txn.put(ledger.sid_key(rec.sid), ledger.record_encoder.encode(rec), db=dbs[b"messages"])
            entry = ledger.record_encoder.encode(ledger.OutboxEntry(rec.sid, rec.to_number))
            txn.put(number_key(NUMBER, seq.to_bytes(8, "big")), entry, db=dbs[b"outbox"])
        txn.delete(b"outbox.views", db=dbs[b"meta"])
    store.close_env()
    reopened = Store(path, map_size=64 << 20, commit_in_thread=False)
    try:
        assert outbox.depth(reopened, NUMBER) == 5
        assert reopened.count(outbox.BY_RECIPIENT, outbox.recipient_prefix(NUMBER, "+15557000001")) == 3
        assert reopened.count(outbox.EXPIRY, number_key(NUMBER)) == 1
    finally:
        reopened.close_env()


# -- any interleaving --------------------------------------------------------------------

Step = tuple[str, int]  # ("accept", recipient) | ("cancel", message index) | ("wait", tenths of a second)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("accept"), st.integers(0, 5)),
        st.tuples(st.just("cancel"), st.integers(0, 200)),
        st.tuples(st.just("wait"), st.integers(1, 80)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps, backlog_size=st.integers(0, 80))
def test_any_interleaving_keeps_order_and_loses_nothing(
    tmp_path_factory: object, script: list[Step], backlog_size: int
) -> None:
    """Accepts (while the window is full or not), cancels (of messages loaded or on disk), time
    passing (sends, a chatty recipient parked by its pair rate): every message not canceled is
    sent once, each recipient's in acceptance order, and the window never grows past its size."""
    path = tmp_path_factory.mktemp("interleave")  # type: ignore[attr-defined]
    trio.run(_interleave, path, script, backlog_size, clock=trio.testing.MockClock(autojump_threshold=0))


async def _interleave(path: object, script: list[Step], backlog_size: int) -> None:
    store = Store(f"{path}/data", map_size=64 << 20, commit_in_thread=False)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            to = [f"+155580000{i:02d}" for i in range(6)]  # to[0] is chatty: most of the backlog
            accepted = await backlog(store, [to[0] if i % 3 else to[i % 6] for i in range(backlog_size)])
            actor, api = cloud_actor(
                store, rate=40.0, burst=4, pair=PairLimiter(6.0, 3, margin=0.0), window=WINDOW
            )
            await nursery.start(actor.run)
            canceled: set[str] = set()
            for op, arg in script:
                if op == "accept":
                    accepted.append(await submit(store, actor, to[arg]))
                elif op == "cancel" and accepted:
                    victim = accepted[arg % len(accepted)]
                    if actor.hold(victim.sid):
                        try:
                            await store.write(ledger.cancel(victim.sid, ACCOUNT, 0.0))
                            canceled.add(victim.sid)
                        except ledger.WrongState:
                            pass
                        finally:
                            actor.release(victim.sid)
                else:
                    await trio.sleep(arg / 10)
                assert actor.statistics().window <= WINDOW
            await wait_for(lambda: actor.statistics().pending == 0)
            statuses = {r.sid: record_of(store, r.sid).status for r in accepted}
            assert all(statuses[sid] == "canceled" for sid in canceled)
            assert all(status in ("sent", "canceled") for status in statuses.values())
            assert len(api.sent) == sum(1 for s in statuses.values() if s == "sent")  # each once
            assert in_acceptance_order(store, accepted)
            actor.stop()
            nursery.cancel_scope.cancel()
    finally:
        store.close_env()
