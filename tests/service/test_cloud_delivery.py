"""Cloud actors against the simulator's Cloud mode with no sockets, under MockClock: what happens
when Meta enforces a limit the actor did not (or a token is revoked), with the simulator's real bodies."""

from __future__ import annotations

import functools

import trio
import trio.testing

from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.cloud import CloudNumber
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers import messages
from tests.helpers.configs import APP_SECRET, PNID, cloud_number_config
from tests.helpers.configs import CLOUD as NUMBER
from tests.helpers.configs import CLOUD_TOKEN as TOKEN
from tests.helpers.messages import record_of

submit = functools.partial(messages.submit, number=NUMBER)
# Polls every 50 ms: the times these tests measure have that resolution.
wait_for = functools.partial(messages.wait_for, timeout=86_400.0, step=0.05)


def simulator(wall: TrioWallClock, **limits: object) -> Simulator:
    sim = Simulator(wall_clock=wall, status_delays=None)
    sim.cloud.add_number(
        CloudNumber(
            number=NUMBER,
            phone_number_id=PNID,
            access_token=TOKEN,
            app_secret=APP_SECRET,
            **limits,
        )  # type: ignore[arg-type]
    )
    return sim


async def test_the_actor_paces_within_metas_limits(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall, throughput=80.0, throughput_burst=80, pair_interval=6.0, pair_burst=45)
    actor = build_actor(
        cloud_number_config(), InProcessTransport(sim, NUMBER, cloud=True), store=writer, wall=wall
    )
    records = [await submit(writer, None, f"+1650555{i % 100:04d}", f"m{i}") for i in range(200)]
    await nursery.start(actor.run)
    await wait_for(lambda: sim.cloud.counters(PNID).accepted == 200)
    counters = sim.cloud.counters(PNID)
    assert (counters.throughput_limited, counters.pair_limited, counters.tier_limited) == (0, 0, 0)
    assert all(record_of(writer, r.sid).status == "sent" for r in records)
    assert actor.statistics().tier_used == 100 and actor.statistics().tier_limit == 250


async def test_a_chatty_conversation_draws_no_131056(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    """Issue 12 item 11: 5 sends, a 6th 7 s later. Meta counts the burst's 5 x 6 s as owed: the 6th
    goes at ~30 s, once (it drew 4 x 131056 and arrived after 92 s when the actor was a plain GCRA)."""
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall)  # Meta's defaults: one per 6 s, bursts of up to 45 borrowing from the future
    actor = build_actor(
        cloud_number_config(), InProcessTransport(sim, NUMBER, cloud=True), store=writer, wall=wall
    )
    await nursery.start(actor.run)
    start = trio.current_time()
    burst = [await submit(writer, actor, "+16505550001", f"m{i}") for i in range(5)]
    await wait_for(lambda: sim.cloud.counters(PNID).accepted == 5)
    assert trio.current_time() - start < 0.5
    await trio.sleep(7.0 - (trio.current_time() - start))
    sixth = await submit(writer, actor, "+16505550001", "m5")
    await wait_for(lambda: sim.cloud.counters(PNID).accepted == 6, step=0.01)
    assert 30.0 <= trio.current_time() - start < 30.5
    assert sim.cloud.counters(PNID).pair_limited == 0 and actor.statistics().pair_limited == 0
    assert [m["text"]["body"] for m in sim.cloud.received(PNID)] == [f"m{i}" for i in range(6)]
    assert all(record_of(writer, r.sid).status == "sent" for r in [*burst, sixth])


async def test_bursts_to_few_recipients_draw_no_131056_and_keep_order(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall)
    actor = build_actor(
        cloud_number_config(), InProcessTransport(sim, NUMBER, cloud=True), store=writer, wall=wall
    )
    await nursery.start(actor.run)
    people = ["+16505550001", "+16505550002", "+16505550003"]
    sent: dict[str, list[str]] = {p: [] for p in people}
    for round_ in range(12):  # a reply burst of 1-4 messages to each, every 4-13 s, for about 2 minutes
        for k, person in enumerate(people):
            for j in range(1 + (round_ + k) % 4):
                body = f"{round_}.{j}"
                sent[person].append(body)
                await submit(writer, actor, person, body)
        await trio.sleep(4.0 + (round_ * 5) % 10)
    total = sum(len(b) for b in sent.values())
    await wait_for(lambda: sim.cloud.counters(PNID).accepted == total)
    assert sim.cloud.counters(PNID).pair_limited == 0 and actor.statistics().pair_limited == 0
    for person in people:
        got = [m["text"]["body"] for m in sim.cloud.received(PNID) if m["to"] == person.removeprefix("+")]
        assert got == sent[person]


async def test_a_steady_conversation_is_not_held_back(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall)
    actor = build_actor(
        cloud_number_config(), InProcessTransport(sim, NUMBER, cloud=True), store=writer, wall=wall
    )
    await nursery.start(actor.run)
    for i in range(20):  # one message every 6.5 s: always within the pair rate, never parked
        asked = trio.current_time()
        await submit(writer, actor, "+16505550001", f"m{i}")
        await wait_for(lambda i=i: sim.cloud.counters(PNID).accepted == i + 1, step=0.01)  # type: ignore[misc]
        assert trio.current_time() - asked < 0.05
        await trio.sleep(6.5 - (trio.current_time() - asked))
    assert sim.cloud.counters(PNID).pair_limited == 0


async def test_metas_pair_refusals_are_backed_off_and_delivered_in_order(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall, pair_interval=6.0, pair_burst=2)
    # The actor believes in a bigger burst than Meta grants: Meta answers 131056.
    actor = build_actor(
        cloud_number_config(pair_burst=10),
        InProcessTransport(sim, NUMBER, cloud=True),
        store=writer,
        wall=wall,
    )
    busy = [await submit(writer, None, "+16505550001", f"b{i}") for i in range(4)]
    other = await submit(writer, None, "+16505550002", "other")
    start = trio.current_time()
    await nursery.start(actor.run)
    await wait_for(lambda: sim.cloud.counters(PNID).accepted == 5)
    sent = [m["text"]["body"] for m in sim.cloud.received(PNID) if m["to"] == "16505550001"]
    assert sent == ["b0", "b1", "b2", "b3"]
    assert record_of(writer, other.sid).status == "sent"
    # One refusal: it ends the burst here too, and b2 waits for the 2 x 6 s Meta counted (then b3 joins
    # it in the next burst), not for 4^X retries that Meta would keep refusing until then.
    assert sim.cloud.counters(PNID).pair_limited == 1 and actor.statistics().pair_limited == 1
    assert 12.0 <= trio.current_time() - start < 12.5
    assert all(record_of(writer, r.sid).status == "sent" for r in busy)


async def test_metas_throughput_refusal_slows_the_number_and_loses_nothing(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall, throughput=10.0, throughput_burst=10)
    actor = build_actor(
        cloud_number_config(throughput=1000, throughput_burst=100),
        InProcessTransport(sim, NUMBER, cloud=True),
        store=writer,
        wall=wall,
    )
    records = [await submit(writer, None, f"+1650555{i:04d}") for i in range(50)]
    await nursery.start(actor.run)
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in records))
    assert sim.cloud.counters(PNID).throughput_limited >= 1
    assert actor.statistics().rate_limited >= 1 and sim.cloud.counters(PNID).accepted == 50


async def test_a_revoked_token_degrades_the_number_until_it_is_replaced(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = simulator(wall)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    num = cloud_number_config(access_token={"file": str(token_file)}, token_recheck=10)
    actor = build_actor(num, InProcessTransport(sim, NUMBER, cloud=True), store=writer, wall=wall)
    await nursery.start(actor.run)
    first = await submit(writer, actor, "+16505550001")
    await wait_for(lambda: record_of(writer, first.sid).status == "sent")
    sim.cloud.revoke_token(PNID, "EAArotated")
    later = [await submit(writer, actor, f"+16505551{i:03d}") for i in range(3)]
    await wait_for(lambda: actor.statistics().degraded is not None)
    await trio.sleep(3600)
    assert all(record_of(writer, r.sid).status == "queued" for r in later)
    unauthorized = sim.cloud.counters(PNID).unauthorized
    assert unauthorized <= 8  # at most the sends in flight when the token went bad, not a retry storm
    token_file.write_text("EAArotated\n")
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in later))
    assert actor.statistics().degraded is None
