"""Crash loops: a number whose actor keeps crashing is degraded and retried slowly; others carry on."""

from __future__ import annotations

import trio
import trio.testing

from actors.supervisor import Supervisor
from actors.transport import Headers, Response
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.configs import number_config
from tests.helpers.messages import submit, wait_for
from tests.helpers.simulated import sim_with


class Buggy:
    """A transport whose message sends raise a non-transport error (a bug) while ``broken``."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.broken = True
        self.crashes: list[float] = []

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        if target == b"/v1/messages" and self.broken:
            self.crashes.append(trio.current_time())
            raise RuntimeError("bug in the channel adapter")
        return await self.inner.request(method, target, headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_crash_loop_degrades_one_number_and_slows_its_restarts(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    bad, good = "+15550000001", "+15550000002"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, bad, good)
    buggy = Buggy(InProcessTransport(sim, bad))
    actors = [
        build_actor(number_config(bad), buggy, store=writer, wall=wall),
        build_actor(
            number_config(good, rate=5, burst=1), InProcessTransport(sim, good), store=writer, wall=wall
        ),
    ]
    supervisor = Supervisor(
        actors, base_delay=0.1, max_delay=2.0, crash_limit=5, crash_window=60.0, degraded_delay=30.0
    )
    await nursery.start(supervisor.run)
    poison = await submit(writer, actors[0], "+15551230000", "crashes the actor", number=bad)
    await wait_for(lambda: supervisor.states()[bad] == "degraded")
    assert len(buggy.crashes) == 5
    reason = actors[0].statistics().degraded
    assert (
        reason is not None and reason.startswith("crash loop: 5 crashes in 60s") and "RuntimeError" in reason
    )
    assert supervisor.degraded() == {bad: reason}
    # Retried slowly from now on: each restart waits 24..30 s (jittered degraded_delay).
    for i in range(40):
        await submit(writer, actors[1], f"+15551230{i:03d}", "steady", number=good)
    await wait_for(lambda: len(buggy.crashes) == 8)
    gaps = [b - a for a, b in zip(buggy.crashes[4:], buggy.crashes[5:], strict=False)]
    assert all(24.0 <= gap <= 30.0 + 1.0 for gap in gaps)
    # The other number delivered everything at its own pace, straight through.
    assert sim.counters(good).accepted == 40 and supervisor.states()[good] == "running"
    # The bug is fixed: the next restart delivers, and a stable run clears the state.
    buggy.broken = False
    await wait_for(lambda: sim.counters(bad).accepted == 1)
    assert writer.count(b"outbox", number_key(bad)) == 0 and poison.sid
    fixed_at = trio.current_time()
    assert supervisor.states()[bad] == "degraded"  # not yet: it must stay up for reset_after
    await wait_for(lambda: supervisor.states()[bad] == "running")
    assert 59.0 <= trio.current_time() - fixed_at <= 60.0 + 1e-6  # reset_after (default 60 s)
    assert actors[0].statistics().degraded is None


async def test_a_number_can_be_marked_degraded_from_outside(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    number = "+15550000001"
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = sim_with(wall, number)
    actor = build_actor(number_config(number), InProcessTransport(sim, number), store=writer, wall=wall)
    supervisor = Supervisor([actor])
    await nursery.start(supervisor.run)
    supervisor.mark_degraded(number, "token revoked (error 190)")
    assert supervisor.states() == {number: "degraded"}
    assert actor.statistics().degraded == "token revoked (error 190)"
    await submit(writer, actor, "+15551230000", "still sends", number=number)
    await wait_for(lambda: sim.counters(number).accepted == 1)  # degraded is a flag, not a stop
    supervisor.clear_degraded(number)
    assert supervisor.states() == {number: "running"} and supervisor.degraded() == {}
