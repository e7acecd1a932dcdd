"""Idle actors keep no task: woken by a message or a due chore, served, idle again (MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from actors import supervisor as supervisor_module
from actors.credentials.token import SPREAD_SHARE
from actors.number import IDLE_LINGER
from actors.supervisor import Supervisor
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from dispatcher.ops.metrics import DispatcherCollector, RequestCounts
from dispatcher.ops.operations import Operations
from dispatcher.service.fleet import Fleet
from dispatcher.service.numbers import build_actor, refresh_spread
from dispatcher.simulator.faults import FaultPlan
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.buckets import as_buckets
from tests.helpers.configs import fleet_config, number_config
from tests.helpers.intake import intake_for_config
from tests.helpers.messages import submit, wait_for
from tests.helpers.simulated import DAY, Timed, multi, sim_with

ONE, TWO = "+15550000001", "+15550000002"


def task_count() -> int:
    """Every task of this trio run."""
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        todo.extend(t for nursery in task.child_nurseries for t in nursery.child_tasks)
    return count


async def test_idle_actors_keep_no_task(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    numbers = [f"+1555000{i:04d}" for i in range(50)]
    sim = sim_with(wall, *numbers)
    actors = [
        build_actor(number_config(n), InProcessTransport(sim, n), store=writer, wall=wall) for n in numbers
    ]
    few = Supervisor(actors[:1])
    await nursery.start(few.run)
    await trio.sleep(IDLE_LINGER + 1)  # the first login is done, the actor idle again
    baseline = task_count()
    many = Supervisor(actors[1:])
    await nursery.start(many.run)
    await trio.sleep(IDLE_LINGER + 1)
    assert all(not a.serving for a in actors)
    assert task_count() == baseline + 2  # the second supervisor's run and its timer task: no task per actor
    assert set(many.states().values()) == {"running"}  # idle counts as running (health, admin)
    assert sim.counters(numbers[7]).logins == 1


async def test_a_message_wakes_an_idle_actor_which_goes_idle_again(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    transport = Timed(InProcessTransport(sim, ONE))
    actor = build_actor(number_config(ONE), transport, store=writer, wall=wall)
    supervisor = Supervisor([actor])
    await nursery.start(supervisor.run)
    await trio.sleep(IDLE_LINGER + 1)
    assert not actor.serving
    for round_ in range(3):
        woken_at = trio.current_time()
        await submit(writer, actor, "+15551230000", f"round {round_}", number=ONE)
        await wait_for(lambda r=round_: sim.counters(ONE).accepted == r + 1)
        assert transport.sends[-1] - woken_at < 0.1
        await wait_for(lambda: not actor.serving)
        # It lingers IDLE_LINGER seconds after its last send, then its task ends.
        assert IDLE_LINGER <= trio.current_time() - transport.sends[-1] <= IDLE_LINGER + 0.02
        assert supervisor.states() == {ONE: "running"} and actor.statistics().running
    assert writer.count(b"outbox", number_key(ONE)) == 0
    assert sim.counters(ONE).logins == 1


async def test_an_idle_actor_refreshes_its_token_on_time(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    actor = build_actor(number_config(ONE), InProcessTransport(sim, ONE), store=writer, wall=wall)
    supervisor = Supervisor([actor])
    start = trio.current_time()
    await nursery.start(supervisor.run)
    await wait_for(lambda: sim.counters(ONE).logins == 1)
    await wait_for(lambda: not actor.serving)
    # Woken only for the login: its task ended as soon as that was done.
    assert trio.current_time() - start < 1.0
    expires_in = actor.statistics().token_expires_in
    assert expires_in is not None and abs(expires_in - 7 * DAY) < 1.0
    # Idle all along: the shared timers wake it a day (stretched by the number's share of a
    # quarter of the other 6 days) before the 7-day token expires.
    lifetime = 6 * DAY - SPREAD_SHARE * refresh_spread(ONE) * 6 * DAY
    await trio.sleep_until(start + lifetime - 1)
    assert sim.counters(ONE).logins == 1 and not actor.serving
    await trio.sleep(2)
    assert sim.counters(ONE).logins == 2
    assert not actor.serving  # back to idle right after the refresh
    await trio.sleep_until(start + 2 * lifetime + 1)
    assert sim.counters(ONE).logins == 3
    # The token still works: a message goes out with no 401.
    await submit(writer, actor, "+15551230000", "after two refreshes", number=ONE)
    await wait_for(lambda: sim.counters(ONE).accepted == 1)
    assert sim.counters(ONE).rejected_401 == 0


async def test_a_woken_actor_that_crashes_is_restarted_and_sends(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The restart backoff is fully jittered (0 to 1 s): at its top the "restarting" state lasts 1 s, which
    # the 10 ms polls below always see (a draw under 10 ms made this test fail about once in a hundred).
    monkeypatch.setattr(supervisor_module.random, "uniform", lambda low, high: high)
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE, TWO)
    transport = Timed(InProcessTransport(sim, ONE))
    actors = [
        build_actor(number_config(ONE), transport, store=writer, wall=wall),
        build_actor(number_config(TWO), InProcessTransport(sim, TWO), store=writer, wall=wall),
    ]
    supervisor = Supervisor(actors, base_delay=1.0)
    await nursery.start(supervisor.run)
    await trio.sleep(IDLE_LINGER + 1)
    assert not actors[0].serving
    transport.fail_next = RuntimeError("bug in the channel adapter")
    record = await submit(writer, actors[0], "+15551230000", "crashes once", number=ONE)
    await wait_for(lambda: supervisor.restarts(ONE) == 1)
    assert supervisor.states()[ONE] == "restarting" and not actors[1].serving
    await wait_for(lambda: sim.counters(ONE).accepted == 1)
    assert [m.content for m in sim.received(ONE)] == ["crashes once"] and record.sid
    assert writer.count(b"outbox", number_key(ONE)) == 0
    await wait_for(lambda: not actors[0].serving)
    assert supervisor.states() == {ONE: "running", TWO: "running"}
    # Woken again later, it sends at once: the crash left nothing behind.
    await submit(writer, actors[0], "+15551230000", "later", number=ONE)
    await wait_for(lambda: sim.counters(ONE).accepted == 2)
    assert supervisor.restarts(ONE) == 1


async def test_pause_holds_a_woken_actor_and_resume_sends(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    actor = build_actor(number_config(ONE), InProcessTransport(sim, ONE), store=writer, wall=wall)
    supervisor = Supervisor([actor])
    await nursery.start(supervisor.run)
    await trio.sleep(IDLE_LINGER + 1)
    actor.pause()
    await submit(writer, actor, "+15551230000", "held", number=ONE)
    await trio.sleep(3600)
    assert sim.counters(ONE).accepted == 0 and actor.statistics().pending == 1
    actor.resume()
    await wait_for(lambda: sim.counters(ONE).accepted == 1)


async def test_stop_returns_at_once_with_idle_actors(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE, TWO)
    actors = [
        build_actor(number_config(n), InProcessTransport(sim, n), store=writer, wall=wall) for n in (ONE, TWO)
    ]
    supervisor = Supervisor(actors)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(IDLE_LINGER + 1)
        began = trio.current_time()
        supervisor.stop()
    assert trio.current_time() == began
    assert supervisor.states() == {ONE: "stopped", TWO: "stopped"}
    assert not any(a.statistics().running for a in actors)  # /metrics reads their outbox from LMDB


async def test_stop_cuts_a_restart_backoff_short(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    transport = Timed(InProcessTransport(sim, ONE))
    actor = build_actor(number_config(ONE), transport, store=writer, wall=wall)
    supervisor = Supervisor([actor], base_delay=1000.0, max_delay=1000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        transport.fail_next = RuntimeError("bug")
        await submit(writer, actor, "+15551230000", "crash", number=ONE)
        await wait_for(lambda: supervisor.restarts(ONE) == 1)
        began = trio.current_time()
        supervisor.stop()
    assert trio.current_time() - began < 1.0
    assert supervisor.states() == {ONE: "stopped"} and writer.count(b"outbox", number_key(ONE)) == 1


async def test_operator_views_show_idle_actors_as_running(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    fleet = Fleet(
        buckets=as_buckets(writer),
        wall=wall,
        make_transport=lambda num, _url: InProcessTransport(sim, num.number),
    )
    config = fleet_config(ONE, drain=5.0, endpoints=["http://whatsapp.invalid"])
    supervisor = Supervisor([fleet.build(n) for n in config.numbers])
    intake = intake_for_config(writer, supervisor, config, wall)
    await nursery.start(supervisor.run)
    await trio.sleep(IDLE_LINGER + 1)
    actor = supervisor.actor(ONE)
    assert actor is not None and not actor.serving
    status = (
        Operations(
            buckets=as_buckets(writer),
            supervisor=supervisor,
            directory=intake.directory,
            draining=intake.draining,
            wall=wall,
        )
        .status()
        .numbers[0]
    )
    assert (status.state, status.outbox, status.in_flight) == ("running", 0, 0)
    assert status.token_expires_in is not None and status.token_expires_in > 6 * DAY
    registry = CollectorRegistry()
    registry.register(
        DispatcherCollector(actors=supervisor.actors, buckets=as_buckets(writer), requests=RequestCounts())
    )
    assert registry.get_sample_value("wadispatch_number_running", {"number": ONE}) == 1.0
    assert registry.get_sample_value("wadispatch_token_refreshes_total", {"number": ONE}) == 1.0


async def test_an_idle_multiconnect_actor_probes_its_endpoints_from_the_shared_timers(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    transport = multi(sim, 2, check_interval=5.0)
    actor = build_actor(number_config(), transport, store=writer, wall=wall)
    supervisor = Supervisor([actor])
    await nursery.start(supervisor.run)
    await trio.sleep(2.5)
    assert not actor.serving  # between probes: no task
    sim.faults.set(f"{ONE[1:]}~1", FaultPlan(down=True))
    await trio.sleep(5.0)  # the probe at 5 s finds it down
    assert [s.healthy for s in transport.statistics()] == [True, False] and not actor.serving
    sim.faults.clear(f"{ONE[1:]}~1")
    await trio.sleep(5.0)  # the probe at 10 s finds it back
    assert [s.healthy for s in transport.statistics()] == [True, True] and not actor.serving
