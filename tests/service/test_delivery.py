"""Actors against the simulator with no sockets, under MockClock: exact timing, no waiting."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.supervisor import Supervisor
from dispatcher.core import ledger
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.configs import number_config
from tests.helpers.messages import submit, wait_for
from tests.helpers.simulated import DAY, Timed, sim_with


async def test_a_burst_of_200_stays_within_60_then_20_per_second(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    number = "+15550000001"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, number)
    transport = Timed(InProcessTransport(sim, number))
    actor = build_actor(number_config(number), transport, store=writer, wall=wall)
    for i in range(200):  # all queued before the actor starts: a true burst
        await submit(writer, None, f"+1555100{i:04d}", f"m{i}", number=number)
    start = trio.current_time()
    await nursery.start(actor.run)
    await wait_for(lambda: len(transport.sends) == 200)
    offsets = [t - start for t in transport.sends]
    assert sum(1 for t in offsets if t == 0.0) <= 60
    for i, t in enumerate(offsets):  # the i+1-th send never beats burst + 20/s
        assert i + 1 <= 60 + 20.0 * t + 1e-6
    assert offsets[-1] == pytest.approx((200 - 59) / 20.0, abs=0.06)
    counters = sim.counters(number)
    assert counters.rejected_429 == 0 and counters.accepted == 200


async def test_token_is_refreshed_before_the_simulator_expires_it(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    number = "+15550000001"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, number)
    actor = build_actor(number_config(number), InProcessTransport(sim, number), store=writer, wall=wall)
    await nursery.start(actor.run)
    await submit(writer, actor, "+15551230000", "day 0", number=number)
    await wait_for(lambda: sim.counters(number).accepted == 1)
    assert sim.counters(number).logins == 1
    for day in range(1, 15):  # two weeks: tokens live 7 days
        await trio.sleep(DAY)
        await submit(writer, actor, "+15551230000", f"day {day}", number=number)
        await wait_for(lambda d=day: sim.counters(number).accepted == d + 1)
    counters = sim.counters(number)
    assert counters.rejected_401 == 0  # never used an expired token
    assert counters.logins == 3  # refreshed at day 6 and day 12, a day ahead of expiry


async def test_an_early_401_triggers_one_shared_refresh(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    number = "+15550000001"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, number)
    actor = build_actor(
        number_config(number, rate=1000, burst=1000), InProcessTransport(sim, number), store=writer, wall=wall
    )
    await nursery.start(actor.run)
    await submit(writer, actor, "+15551230000", "first", number=number)
    await wait_for(lambda: sim.counters(number).accepted == 1)
    sim.advance_clock(8 * DAY)  # the server's clock jumps: our token is now expired there
    for i in range(20):  # 20 concurrent senders, each gets a 401
        await submit(writer, actor, f"+155512310{i:02d}", "after expiry", number=number)
    await wait_for(lambda: sim.counters(number).accepted == 21)
    assert sim.counters(number).logins == 2  # one login for all 401s


async def test_a_crashing_actor_is_restarted_and_others_keep_delivering(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    one, two = "+15550000001", "+15550000002"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, one, two)
    bad = Timed(InProcessTransport(sim, one))
    good = Timed(InProcessTransport(sim, two))
    actors = [
        build_actor(number_config(one), bad, store=writer, wall=wall),
        build_actor(number_config(two, rate=5, burst=1), good, store=writer, wall=wall),
    ]
    supervisor = Supervisor(actors, base_delay=1.0)
    await nursery.start(supervisor.run)
    bad.fail_next = RuntimeError("bug in the channel adapter")
    crashed = await submit(writer, actors[0], "+15551230000", "crashes once", number=one)
    for i in range(20):
        await submit(writer, actors[1], "+15551230000", f"steady {i}", number=two)
    await wait_for(lambda: sim.counters(one).accepted == 1 and sim.counters(two).accepted == 20)
    assert supervisor.restarts(one) == 1 and supervisor.restarts(two) == 0
    # The other number kept its pace (5/s) straight through the crash.
    gaps = [b - a for a, b in zip(good.sends, good.sends[1:], strict=False)]
    assert max(gaps) == pytest.approx(0.2, abs=1e-6)
    raw = writer.get(b"messages", ledger.sid_key(crashed.sid))
    assert raw is not None and ledger.load(raw).status == "sent"
    assert writer.count(b"outbox", number_key(one)) == 0
