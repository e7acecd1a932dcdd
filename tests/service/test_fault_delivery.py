"""Delivery under each injected fault: the actor against the simulator, no sockets, under MockClock."""

from __future__ import annotations

import pytest
import structlog
import trio
import trio.testing

from actors.number import NumberActor
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.faults import FaultKind, FaultPlan
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.configs import number_config
from tests.helpers.messages import record_of, submit, wait_for
from tests.helpers.simulated import Timed, sim_with

NUMBER = "+15550000001"
DIGITS = NUMBER[1:]
TO = "+15551230000"


def setup(
    store: Store, *, script: list[FaultKind] | None = None, plan: FaultPlan | None = None, **fields: object
) -> tuple[Simulator, Timed, NumberActor]:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, NUMBER)
    if plan is not None or script is not None:
        sim.faults.set(DIGITS, plan or FaultPlan(script=script or []))
    transport = Timed(InProcessTransport(sim, NUMBER))
    fields.setdefault("rate", 1000.0)
    fields.setdefault("burst", 1000)
    actor = build_actor(number_config(**fields), transport, store=store, wall=wall)
    return sim, transport, actor


def done(store: Store, sid: str) -> bool:
    return record_of(store, sid).status in ("sent", "failed")


async def test_5xx_answers_are_retried_then_delivered_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, _, actor = setup(writer, script=["error_503", "error_502", "error_500"])
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent"
    assert sim.counters(NUMBER).accepted == 1
    assert actor.statistics().retries == 3 and actor.statistics().ambiguous == 0
    assert writer.count(b"outbox", number_key(NUMBER)) == 0


async def test_5xx_forever_fails_with_63012_after_max_attempts(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, transport, actor = setup(
        writer, plan=FaultPlan(error_rate=1.0, error_status=500), max_attempts=5, backoff_cap=4.0
    )
    await nursery.start(actor.run)
    start = trio.current_time()
    record = await submit(writer, actor, TO, "doomed", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    failed = record_of(writer, record.sid)
    assert failed.status == "failed" and failed.error_code == 63012
    assert len(transport.sends) == 5 and sim.counters(NUMBER).accepted == 0
    # Full jitter: each of the 4 waits is at most min(cap, base * 2**k).
    assert trio.current_time() - start <= 0.5 + 1 + 2 + 4 + 1e-6
    assert writer.count(b"outbox", number_key(NUMBER)) == 0


async def test_refused_connections_are_retried_and_not_ambiguous(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, _, actor = setup(writer, script=["refuse", "refuse"])
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent"
    assert sim.counters(NUMBER).accepted == 1 and actor.statistics().ambiguous == 0


async def test_a_reset_is_ambiguous_retried_and_delivered_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, _, actor = setup(writer, script=["reset"])
    await nursery.start(actor.run)
    with structlog.testing.capture_logs() as logs:
        record = await submit(writer, actor, TO, "hello", number=NUMBER)
        await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent"
    assert sim.counters(NUMBER).accepted == 1  # reset before the API acted: no duplicate
    assert actor.statistics().ambiguous == 1
    ambiguous = [e for e in logs if e["event"] == "send.ambiguous"]
    assert len(ambiguous) == 1 and ambiguous[0]["sid"] == record.sid and ambiguous[0]["number"] == NUMBER


async def test_a_dropped_answer_is_resent_under_the_retry_policy(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, _, actor = setup(writer, script=["drop"])
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent"
    # At-least-once: WhatsApp got it twice, and the ambiguous count explains the duplicate.
    assert sim.counters(NUMBER).accepted == 2 and actor.statistics().ambiguous == 1


async def test_a_dropped_answer_fails_under_the_fail_policy(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, transport, actor = setup(writer, script=["drop"], on_ambiguous="fail")
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    failed = record_of(writer, record.sid)
    assert (
        failed.status == "failed"
        and failed.error_code == 30008
        and "on_ambiguous" in str(failed.error_message)
    )
    assert sim.counters(NUMBER).accepted == 1 and len(transport.sends) == 1  # at-most-once
    assert actor.statistics().ambiguous == 1 and actor.statistics().retries == 0


async def test_429_with_retry_after_is_honoured(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, transport, actor = setup(writer, plan=FaultPlan(script=["throttle"], retry_after=7.0))
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent" and sim.counters(NUMBER).accepted == 1
    assert transport.sends[1] - transport.sends[0] == pytest.approx(7.0, abs=1e-6)
    assert actor.statistics().rate_limited == 1


async def test_429_without_retry_after_slows_the_bucket(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    _, _, actor = setup(writer, script=["throttle"], rate=20.0, burst=20)
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent"
    assert actor.statistics().rate_limited == 1 and actor.statistics().send_rate < 20.0
    await trio.sleep(60)  # additive recovery back to the configured rate
    assert actor.statistics().send_rate == 20.0


async def test_aimd_settles_just_under_the_real_limit(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    # We are configured for 20/s, the API really allows 10/s: we must find ~10/s by ourselves.
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = Simulator(
        [configuration_sim_number(rate=10.0, burst=10)], wall_clock=wall, status_delays=None, fault_seed=1
    )
    transport = Timed(InProcessTransport(sim, NUMBER))
    actor = build_actor(number_config(rate=20.0, burst=20), transport, store=writer, wall=wall)
    for i in range(1500):
        await submit(writer, None, f"+1555100{i:04d}", f"m{i}", number=NUMBER)
    await nursery.start(actor.run)
    await wait_for(lambda: sim.counters(NUMBER).accepted == 1500)
    late = [t for t in transport.sends if t >= transport.sends[0] + 30]
    rate = len(late) / (late[-1] - late[0])
    assert 9.0 <= rate <= 10.5  # attempts per second: at the real limit, not at our 20/s
    counters = sim.counters(NUMBER)
    assert counters.rejected_429 < 0.03 * counters.accepted  # and rarely over it
    assert actor.statistics().rate_limited == counters.rejected_429
    assert writer.count(b"outbox", number_key(NUMBER)) == 0


def configuration_sim_number(*, rate: float, burst: int):  # type: ignore[no-untyped-def]
    from dispatcher.simulator.config import SimNumber

    return SimNumber(number=NUMBER, password="Passw0rd!", rate=rate, burst=burst)


async def test_a_token_revoked_early_is_renewed_and_the_send_goes_out_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    sim, _, actor = setup(writer, script=["unauthorized"])
    await nursery.start(actor.run)
    record = await submit(writer, actor, TO, "hello", number=NUMBER)
    await wait_for(lambda: done(writer, record.sid))
    assert record_of(writer, record.sid).status == "sent"
    counters = sim.counters(NUMBER)
    assert counters.accepted == 1 and counters.logins == 2 and counters.rejected_401 == 1


async def test_backoff_keeps_recipient_order_and_lets_others_through(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    # One in-flight slot: while the first recipient backs off, the slot serves the others.
    sim, _, actor = setup(
        writer, script=["error_503"], max_in_flight=1, backoff_base=100.0, backoff_cap=100.0
    )
    await nursery.start(actor.run)
    first = [await submit(writer, actor, TO, f"a{i}", number=NUMBER) for i in range(3)]
    others = [await submit(writer, actor, f"+155512399{i:02d}", f"b{i}", number=NUMBER) for i in range(5)]
    await wait_for(lambda: all(done(writer, r.sid) for r in first + others))
    received = sim.received(NUMBER)
    assert [m.content for m in received if m.recipient == TO[1:]] == ["a0", "a1", "a2"]
    # The others were not held up behind a0's backoff.
    order = [m.content for m in received]
    assert order.index("b4") < order.index("a0")


async def test_a_slow_endpoint_of_one_number_does_not_slow_another(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    slow, fast = "+15550000001", "+15550000002"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, slow, fast)
    sim.faults.set(slow[1:], FaultPlan(latency=5.0, jitter=1.0))
    actors = [
        build_actor(
            number_config(n, rate=1000.0, burst=1000), InProcessTransport(sim, n), store=writer, wall=wall
        )
        for n in (slow, fast)
    ]
    for actor in actors:
        await nursery.start(actor.run)
    start = trio.current_time()
    for i in range(50):
        await submit(writer, actors[0], f"+155512300{i:02d}", "slow", number=slow)
        await submit(writer, actors[1], f"+155512300{i:02d}", "fast", number=fast)
    await wait_for(lambda: sim.counters(fast).accepted == 50)
    assert trio.current_time() - start < 0.5  # the fast number never waited on the slow one
    assert sim.counters(slow).accepted < 50
    await wait_for(lambda: sim.counters(slow).accepted == 50)


async def test_stop_ends_a_backoff_and_keeps_the_message(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    _, _, actor = setup(writer, plan=FaultPlan(error_rate=1.0), backoff_base=600.0, backoff_cap=600.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        record = await submit(writer, actor, TO, "later", number=NUMBER)
        await trio.sleep(1.0)
        start = trio.current_time()
        actor.stop()
    assert trio.current_time() - start < 1.0  # not the 600 s backoff
    assert record_of(writer, record.sid).status == "queued"
    assert writer.count(b"outbox", number_key(NUMBER)) == 1
