"""Supervisor add/retire/replace (what live reload uses), under MockClock against the in-process simulator."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.supervisor import Supervisor
from actors.transport import ConnectError, Headers, Response
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from dispatcher.service.fleet import Fleet
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.buckets import as_buckets
from tests.helpers.configs import fleet_config, number_config
from tests.helpers.intake import intake_for_config, reloader_for
from tests.helpers.messages import submit, wait_for
from tests.helpers.simulated import Timed, sim_with

ONE, TWO = "+15550000001", "+15550000002"


class Unreachable:
    """An endpoint that never answers: the actor can never log in."""

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        raise ConnectError("connection refused")

    async def aclose(self) -> None:
        pass


async def test_retire_stops_one_number_and_keeps_its_outbox(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE, TWO)
    actors = [
        build_actor(
            number_config(n, rate=1, burst=1), Timed(InProcessTransport(sim, n)), store=writer, wall=wall
        )
        for n in (ONE, TWO)
    ]
    supervisor = Supervisor(actors)
    await nursery.start(supervisor.run)
    for i in range(5):
        await submit(writer, actors[0], "+15551230000", f"one {i}", number=ONE)
        await submit(writer, actors[1], "+15551230000", f"two {i}", number=TWO)
    await wait_for(lambda: sim.counters(ONE).accepted == 1)
    await supervisor.retire(ONE, timeout=5.0)
    assert supervisor.actor(ONE) is None and ONE not in supervisor.states()
    left = writer.count(b"outbox", number_key(ONE))
    assert 1 <= left <= 4  # what was not sent stays for the number's next actor
    sent_then = sim.counters(ONE).accepted
    await trio.sleep(30)
    assert sim.counters(ONE).accepted == sent_then  # nothing more for the retired number
    assert sim.counters(TWO).accepted == 5  # the other number went on at its pace

    # The number comes back (a later reload): its new actor sends what was left, in order.
    again = build_actor(number_config(ONE), Timed(InProcessTransport(sim, ONE)), store=writer, wall=wall)
    await supervisor.add(again)
    await wait_for(lambda: writer.count(b"outbox", number_key(ONE)) == 0)
    bodies = [r.content for r in sim.received(ONE)]
    assert bodies == [f"one {i}" for i in range(5)]


class HungSends:
    """Logs in, then never answers a message send."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        if target == b"/v1/messages":
            await trio.sleep_forever()
        return await self.inner.request(method, target, headers, body)

    async def aclose(self) -> None:
        pass


async def test_retire_cancels_an_actor_that_cannot_stop_in_time(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    stuck = build_actor(number_config(ONE), HungSends(InProcessTransport(sim, ONE)), store=writer, wall=wall)
    supervisor = Supervisor([stuck])
    await nursery.start(supervisor.run)
    await submit(writer, stuck, "+15551230000", "its send never comes back", number=ONE)
    await trio.sleep(5)  # request_timeout is the transport's job: this one has none
    began = trio.current_time()
    await supervisor.retire(ONE, timeout=7.0)
    assert trio.current_time() - began == 7.0
    assert supervisor.actor(ONE) is None
    assert writer.count(b"outbox", number_key(ONE)) == 1  # retried by the number's next actor


@pytest.mark.parametrize("pending", [0, 3])
async def test_an_actor_without_a_token_retires_at_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery, pending: int
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    never = build_actor(number_config(ONE), Unreachable(), store=writer, wall=wall)
    supervisor = Supervisor([never])
    await nursery.start(supervisor.run)
    for i in range(pending):
        await submit(writer, never, "+15551230000", f"waits for a token {i}", number=ONE)
    await trio.sleep(60)  # logging in fails and is retried every 5 s
    began = trio.current_time()
    await supervisor.retire(ONE, timeout=7.0)
    assert trio.current_time() - began < 1.0
    assert supervisor.actor(ONE) is None
    assert writer.count(b"outbox", number_key(ONE)) == pending


async def test_retire_cuts_a_restart_backoff_short(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    transport = Timed(InProcessTransport(sim, ONE))
    actor = build_actor(number_config(ONE), transport, store=writer, wall=wall)
    supervisor = Supervisor([actor], base_delay=1000.0, max_delay=1000.0)
    await nursery.start(supervisor.run)
    transport.fail_next = RuntimeError("bug")
    await submit(writer, actor, "+15551230000", "crash", number=ONE)
    await wait_for(lambda: supervisor.restarts(ONE) == 1)
    began = trio.current_time()
    await supervisor.retire(ONE, timeout=5.0)
    assert trio.current_time() - began < 1.0


async def test_replace_hands_the_outbox_to_the_new_actor(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE)
    old_transport = Timed(InProcessTransport(sim, ONE))
    old = build_actor(number_config(ONE), old_transport, store=writer, wall=wall)
    supervisor = Supervisor([old])
    await nursery.start(supervisor.run)
    old.pause()
    for i in range(3):
        await submit(writer, old, f"+1555123000{i}", f"m{i}", number=ONE)
    new_transport = Timed(InProcessTransport(sim, ONE))
    new = build_actor(number_config(ONE), new_transport, store=writer, wall=wall)
    await supervisor.replace(new, timeout=5.0)
    assert supervisor.actor(ONE) is new
    await wait_for(lambda: writer.count(b"outbox", number_key(ONE)) == 0)
    assert old_transport.sends == [] and len(new_transport.sends) == 3
    assert sorted(r.content for r in sim.received(ONE)) == ["m0", "m1", "m2"]


async def test_removed_numbers_drain_at_the_same_time(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, ONE, TWO)
    fleet = Fleet(
        buckets=as_buckets(writer),
        wall=wall,
        make_transport=lambda num, _url: Timed(InProcessTransport(sim, num.number)),
    )
    first = fleet_config(ONE, TWO, drain=5.0, endpoints=["http://whatsapp.invalid"])
    supervisor = Supervisor([fleet.build(n) for n in first.numbers])
    intake = intake_for_config(writer, supervisor, first, wall)
    await nursery.start(supervisor.run)
    for number in (ONE, TWO):
        actor = supervisor.actor(number)
        assert actor is not None
        actor.pause()  # a paused number cannot drain: each removal waits its full drain_timeout
        await submit(writer, actor, "+15551230000", "stays", number=number)
    current = {"config": first}
    reloader = reloader_for(intake, supervisor, fleet, load=lambda: current["config"], config=first)
    current["config"] = fleet_config(drain=5.0)
    began = trio.current_time()
    result = await reloader()
    assert result.ok and result.removed == [ONE, TWO]
    # Both drains ran at once: 5 s in all, not 5 s per number. Both outboxes are kept.
    assert 5.0 <= trio.current_time() - began < 5.5
    assert supervisor.actors() == []
    assert writer.count(b"outbox", number_key(ONE)) == writer.count(b"outbox", number_key(TWO)) == 1
