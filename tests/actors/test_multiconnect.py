"""Multiconnect: several endpoints per number, least-outstanding choice, failover, health checks."""

from __future__ import annotations

import json

import trio
import trio.testing

from actors.multiconnect import MultiEndpoint
from actors.transport import ConnectError, ResponseLostError
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.faults import FaultPlan
from tests.helpers.configs import number_config
from tests.helpers.messages import submit, wait_for
from tests.helpers.simulated import multi, sim_with

NUMBER = "+15550000001"
DIGITS = NUMBER[1:]


async def login_headers(transport: MultiEndpoint) -> list[tuple[bytes, bytes]]:
    resp = await transport.request(
        b"POST", b"/v1/users/login", [(b"authorization", b"Basic YWRtaW46UGFzc3cwcmQh")], b""
    )
    token = json.loads(resp.body)["users"][0]["token"]
    return [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]


SEND = json.dumps({"to": "15551234567", "type": "text", "text": {"body": "hi"}}).encode()


async def test_a_refused_endpoint_fails_over_within_the_request() -> None:
    wall = TrioWallClock()
    sim = sim_with(wall, NUMBER)
    sim.faults.set(f"{DIGITS}~0", FaultPlan(down=True))
    transport = multi(sim)
    auth = await login_headers(transport)
    for _ in range(10):
        assert (await transport.request(b"POST", b"/v1/messages", auth, SEND)).status == 201
    assert sim.counters(NUMBER).accepted == 10  # each exactly once
    stats = {s.url: s for s in transport.statistics()}
    assert stats[f"sim/{DIGITS}~0"].healthy is False and stats[f"sim/{DIGITS}~0"].failures == 1
    assert transport.failovers == 1  # then it is skipped while down
    assert stats[f"sim/{DIGITS}~1"].requests + stats[f"sim/{DIGITS}~2"].requests == 11  # login + 10


async def test_every_endpoint_down_is_a_connect_error_naming_them() -> None:
    wall = TrioWallClock()
    sim = sim_with(wall, NUMBER)
    sim.faults.set(DIGITS, FaultPlan(down=True))  # the number's plan covers every endpoint
    transport = multi(sim, 2)
    try:
        await login_headers(transport)
    except ConnectError as exc:
        assert f"sim/{DIGITS}~0" in str(exc) and f"sim/{DIGITS}~1" in str(exc)
    else:
        raise AssertionError("expected ConnectError")


async def test_an_ambiguous_failure_is_not_resent_to_another_endpoint() -> None:
    wall = TrioWallClock()
    sim = sim_with(wall, NUMBER)
    transport = multi(sim, 2)
    auth = await login_headers(transport)
    sim.faults.set(f"{DIGITS}~1", FaultPlan(script=["drop"]))
    sim.faults.set(f"{DIGITS}~0", FaultPlan(script=["drop"]))
    try:
        await transport.request(b"POST", b"/v1/messages", auth, SEND)
    except ResponseLostError:
        pass
    else:
        raise AssertionError("expected ResponseLostError")
    assert sim.counters(NUMBER).accepted == 1  # sent once; the actor's policy decides the rest


async def test_least_outstanding_spreads_away_from_a_slow_endpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wall = TrioWallClock()
    sim = sim_with(wall, NUMBER)
    transport = multi(sim, 2)
    auth = await login_headers(transport)
    sim.faults.set(f"{DIGITS}~0", FaultPlan(latency=1.0))  # ~1 is instant
    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(transport.request, b"POST", b"/v1/messages", auth, SEND)
            await trio.sleep(0.1)
    stats = {s.url: s for s in transport.statistics()}
    slow, fast = stats[f"sim/{DIGITS}~0"], stats[f"sim/{DIGITS}~1"]
    assert slow.requests < fast.requests / 3
    assert sim.counters(NUMBER).accepted == 40


async def test_health_checks_bring_an_endpoint_back(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, NUMBER)
    transport = multi(sim, 2, check_interval=5.0)
    actor = build_actor(number_config(rate=1000.0, burst=1000), transport, store=writer, wall=wall)
    await nursery.start(actor.run)  # the actor runs the endpoint monitor
    sim.faults.set(f"{DIGITS}~1", FaultPlan(down=True))
    for i in range(20):
        await submit(writer, actor, f"+155512300{i:02d}", f"m{i}", number=NUMBER)
    await wait_for(lambda: sim.counters(NUMBER).accepted == 20)
    await trio.sleep(6.0)  # a probe confirms it is down
    assert [s.healthy for s in transport.statistics()] == [True, False]
    sim.faults.clear(f"{DIGITS}~1")  # it comes back
    await trio.sleep(5.0)
    assert [s.healthy for s in transport.statistics()] == [True, True]
    before = transport.statistics()[1].requests
    for i in range(20):
        await submit(writer, actor, f"+155512310{i:02d}", f"n{i}", number=NUMBER)
    await wait_for(lambda: sim.counters(NUMBER).accepted == 40)
    assert transport.statistics()[1].requests > before  # used again
    # Nothing lost, nothing duplicated, nothing ambiguous: refusals are safe to fail over.
    assert writer.count(b"outbox", number_key(NUMBER)) == 0
    assert actor.statistics().ambiguous == 0 and actor.statistics().failed == 0


async def test_an_endpoint_going_down_mid_stream_loses_and_duplicates_nothing(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, NUMBER)
    transport = multi(sim, 3)
    actor = build_actor(number_config(rate=50.0, burst=10), transport, store=writer, wall=wall)
    await nursery.start(actor.run)
    for i in range(300):
        await submit(writer, actor, f"+15551{i % 7:03d}0000", f"m{i}", number=NUMBER)
    await trio.sleep(2.0)
    sim.faults.set(f"{DIGITS}~0", FaultPlan(down=True))
    await trio.sleep(2.0)
    sim.faults.set(f"{DIGITS}~2", FaultPlan(down=True))
    await trio.sleep(2.0)
    sim.faults.clear()
    await wait_for(lambda: sim.counters(NUMBER).accepted >= 300)
    bodies = [m.content for m in sim.received(NUMBER)]
    assert sorted(bodies) == sorted(f"m{i}" for i in range(300))  # each exactly once
    assert writer.count(b"outbox", number_key(NUMBER)) == 0 and actor.statistics().ambiguous == 0
