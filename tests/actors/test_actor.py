from __future__ import annotations

import functools
import gc

import trio
import trio.testing

from actors import number as number_mod
from actors.transport import ConnectError, ResponseLostError
from dispatcher.core import ledger
from dispatcher.core.store import Store, number_key
from tests.helpers import messages
from tests.helpers.actors import NUMBER, onprem_actor, submit
from tests.helpers.fakes import error
from tests.helpers.messages import record_of

wait_for = functools.partial(messages.wait_for, timeout=600.0)


async def test_per_recipient_order_with_concurrency(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer, latency=0.05, max_in_flight=4)
    await nursery.start(actor.run)
    records = []
    for i in range(30):
        records.append(await submit(writer, actor, f"+1555123000{i % 3}", f"m{i}"))
    await wait_for(lambda: len(api.sent) == 30)
    for r in range(3):
        got = [body for _, to, body in api.sent if to == f"1555123000{r}"]
        assert got == [f"m{i}" for i in range(30) if i % 3 == r]
    assert 1 < api.max_in_flight <= 3  # concurrent across recipients, never two for one recipient
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in records))
    assert writer.count(b"outbox", number_key(NUMBER)) == 0


async def test_recovers_the_outbox_on_start(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    records = [await submit(writer, None, "+15551230000", f"m{i}") for i in range(5)]
    actor, api, _ = onprem_actor(writer)
    await nursery.start(actor.run)
    await wait_for(lambda: len(api.sent) == 5)
    assert [body for *_, body in api.sent] == [f"m{i}" for i in range(5)]
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in records))


async def test_recovery_leaves_the_garbage_collector_as_it_found_it(writer: Store) -> None:
    """Recovery turns the cyclic GC off while it loads the outbox, and back on after."""
    for i in range(3):
        await submit(writer, None, f"+155512300{i:02d}", f"m{i}")
    actor, _, _ = onprem_actor(writer)
    assert gc.isenabled()
    assert actor._recover() == 3
    assert gc.isenabled()
    assert actor.statistics().pending == 3
    gc.disable()
    try:
        actor._reset()
        assert actor._recover() == 3
        assert not gc.isenabled()  # an embedding application that turned it off keeps it off
    finally:
        gc.enable()


async def test_transient_errors_back_off_then_deliver_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    api.script = lambda msg, n: error(503, 1011, "Service not ready") if n <= 3 else None
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert len(api.sent) == 1 and len(api.attempts) == 4
    assert actor.statistics().retries == 3 and record_of(writer, record.sid).attempts == 1


async def test_429_with_retry_after_is_honoured(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    api.script = lambda msg, n: (
        error(429, 1015, "Too many requests", [(b"retry-after", b"7")]) if n == 1 else None
    )
    await nursery.start(actor.run)
    start = trio.current_time()
    await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: len(api.sent) == 1)
    assert api.sent[0][0] - start >= 7.0
    assert actor.statistics().rate_limited == 1


async def test_401_logs_in_again_and_retries(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    await nursery.start(actor.run)
    await submit(writer, actor, "+15551230000", "one")
    await wait_for(lambda: len(api.sent) == 1)
    api.token = "revoked-by-server"  # the server forgot our token
    await submit(writer, actor, "+15551230000", "two")
    await wait_for(lambda: len(api.sent) == 2)
    assert api.logins == 2


async def test_permanent_error_fails_with_the_twilio_code(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    api.script = lambda msg, n: error(400, 470, "Re-engagement message")
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "failed")
    stored = record_of(writer, record.sid)
    assert stored.error_code == 63016 and len(api.attempts) == 1
    assert writer.count(b"outbox", number_key(NUMBER)) == 0


async def test_connection_errors_retry_and_ambiguous_sends_are_counted(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    faults = [ConnectError("refused"), ResponseLostError("reset")]
    api.script = lambda msg, n: faults[n - 1] if n <= 2 else None
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert actor.statistics().retries == 2 and actor.statistics().ambiguous == 1


async def test_gives_up_after_max_attempts(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
) -> None:
    actor, api, _ = onprem_actor(writer, max_attempts=3)
    api.script = lambda msg, n: error(500, 500, "Generic error")
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "failed")
    # 5xx exhausted: Twilio's "channel provider returned an internal service error".
    assert len(api.attempts) == 3 and record_of(writer, record.sid).error_code == 63012


async def test_stop_finishes_in_flight_and_keeps_the_rest(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    actor, api, _ = onprem_actor(writer, rate=1.0, burst=1, latency=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        for i in range(10):
            await submit(writer, actor, "+15551230000", f"m{i}")
        await trio.sleep(2.1)
        actor.stop()
    sent = len(api.sent)
    assert 1 <= sent < 10
    assert writer.count(b"outbox", number_key(NUMBER)) == 10 - sent


async def test_an_unknown_error_code_is_retried_a_few_times_then_failed(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    api.script = lambda msg, n: error(400, 4242, "Something new")
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "failed")
    failed = record_of(writer, record.sid)
    assert len(api.attempts) == 3  # UNKNOWN_CODE_ATTEMPTS, below max_attempts (12)
    assert failed.error_code == 30008 and failed.error_message == "WhatsApp error 4242: Something new"


async def test_a_known_permanent_code_fails_at_once_with_its_twilio_code(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    api.script = lambda msg, n: error(400, 470, "Message failed to send because more than 24 hours")
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "failed")
    assert len(api.attempts) == 1 and record_of(writer, record.sid).error_code == 63016


async def test_a_sent_commit_frees_the_send_slot_but_holds_the_recipient(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery, monkeypatch
) -> None:
    """Waiting for the durable 'sent' must not idle the number's send slots: another recipient
    goes out meanwhile, while the same recipient's next message waits for that commit."""
    gate = trio.Event()
    mark_sent = ledger.mark_sent
    real_write = writer.write

    def tagged_mark_sent(*args, **kwargs):
        fn = mark_sent(*args, **kwargs)
        fn.is_sent = True  # type: ignore[attr-defined]
        return fn

    async def gated_write(fn):
        if getattr(fn, "is_sent", False):
            await gate.wait()
        return await real_write(fn)

    monkeypatch.setattr(number_mod.ledger, "mark_sent", tagged_mark_sent)
    monkeypatch.setattr(writer, "write", gated_write)
    actor, api, _ = onprem_actor(writer, max_in_flight=1)
    await nursery.start(actor.run)
    a1 = await submit(writer, actor, "+15551230001", "a1")
    b1 = await submit(writer, actor, "+15551230002", "b1")
    a2 = await submit(writer, actor, "+15551230001", "a2")
    await wait_for(lambda: len(api.sent) == 2)
    await trio.sleep(1.0)
    assert [body for *_, body in api.sent] == ["a1", "b1"]  # one slot, two sends: a1's commit pends
    assert record_of(writer, a1.sid).status == "queued"
    gate.set()
    await wait_for(lambda: len(api.sent) == 3)
    assert [body for *_, body in api.sent] == ["a1", "b1", "a2"]
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in (a1, b1, a2)))
