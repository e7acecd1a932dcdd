"""A Cloud number's actor under MockClock: the three limits, 131056 back-off, token 190."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import trio
import trio.testing

from actors.credentials.bearer import BearerCredentials
from actors.pacing.pairrate import PairLimiter
from actors.pacing.tier import WINDOW
from dispatcher.core import window
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, number_key
from tests.helpers import messages
from tests.helpers.actors import NUMBER, cloud_actor, submit
from tests.helpers.fakes import graph_error
from tests.helpers.messages import record_of

# Bounds long enough for the tier budget's 24 h window.
wait_for = functools.partial(messages.wait_for, timeout=10 * 86_400.0)


async def test_throughput_is_paced_per_number(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api = cloud_actor(writer, rate=80.0, burst=1)
    await nursery.start(actor.run)
    start = trio.current_time()
    for i in range(161):
        await submit(writer, actor, f"+1555200{i:04d}")
    await wait_for(lambda: len(api.sent) == 161)
    assert api.sent[-1][0] - start >= 2.0 - 1e-6  # 160 intervals of 1/80 s


async def test_throughput_error_pauses_the_number_and_retries(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api = cloud_actor(writer)
    api.script = lambda to, n: graph_error(130429) if n == 1 else None
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15552000001")
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert api.attempts[1][0] - api.attempts[0][0] >= 1.0
    assert actor.statistics().rate_limited == 1


async def test_pair_rate_parks_one_recipient_without_blocking_the_others(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api = cloud_actor(writer, pair=PairLimiter(6.0, 2, margin=0.0))
    await nursery.start(actor.run)
    start = trio.current_time()
    for i in range(5):
        await submit(writer, actor, "+15552000001", f"busy{i}")
    for i in range(3):
        await submit(writer, actor, f"+1555300000{i}")
    await wait_for(lambda: len(api.sent) == 8)
    busy = [round(t - start, 3) for t, to in api.sent if to == "15552000001"]
    others = [t - start for t, to in api.sent if to != "15552000001"]
    # Bursts of 2 borrow 2 x 6 s each: the next pair goes once that is repaid (Meta's count).
    assert busy == [0.0, 0.0, 12.0, 12.0, 24.0]
    assert max(others) < 1.0  # not behind the parked recipient
    assert len(api.attempts) == 8  # nothing was sent only to be refused


async def test_meta_pair_refusals_back_off_four_to_the_x(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api = cloud_actor(writer, pair=PairLimiter(6.0, 45))
    api.script = lambda to, n: graph_error(131056) if to == "15552000001" and n <= 4 else None
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15552000001")
    await wait_for(lambda: len(api.attempts) >= 1)
    other = await submit(writer, actor, "+15552000002")
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    times = [t for t, to in api.attempts if to == "15552000001"]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps[:3] == [1.0, 4.0, 16.0]
    assert record_of(writer, other.sid).status == "sent"
    assert api.sent[0][1] == "15552000002"
    assert actor.statistics().pair_limited == 3


async def test_tier_budget_holds_new_recipients_until_the_window_moves(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    await writer.write(lambda txn: window.touch(txn, NUMBER, "+15559999999", wall.now()))
    actor, api = cloud_actor(writer, limit=2, wall=wall)
    await nursery.start(actor.run)
    first = [await submit(writer, actor, f"+155520000{i:02d}") for i in range(3)]
    reply = await submit(writer, actor, "+15559999999")  # inside the service window: free
    again = await submit(writer, actor, "+15552000000")  # counted already: free
    await wait_for(lambda: len(api.sent) == 4)
    waiting = record_of(writer, first[2].sid)
    assert waiting.status == "queued"
    assert record_of(writer, reply.sid).status == "sent" and record_of(writer, again.sid).status == "sent"
    stats = actor.statistics()
    assert (stats.tier_used, stats.tier_limit, stats.parked) == (2, 2, 1) and stats.tier_waits >= 1
    assert writer.count(b"outbox", number_key(NUMBER)) == 1
    start = trio.current_time()
    await wait_for(lambda: len(api.sent) == 5, step=60.0)
    assert trio.current_time() - start >= WINDOW - 120


async def test_tier_counts_survive_a_restart(autojump_clock: trio.testing.MockClock, writer: Store) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    actor, api = cloud_actor(writer, limit=1, wall=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await submit(writer, actor, "+15552000001")
        await wait_for(lambda: len(api.sent) == 1)
        actor.stop()
    again, api2 = cloud_actor(writer, limit=1, wall=wall)
    waiting = await submit(writer, None, "+15552000002")
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        await trio.sleep(3600)
        assert api2.sent == [] and record_of(writer, waiting.sid).status == "queued"
        assert again.statistics().tier_used == 1
        again.stop()


async def test_token_190_degrades_until_the_token_is_replaced(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("EAAexpired\n")
    actor, api = cloud_actor(writer, token=lambda: token_file.read_text().strip())
    await nursery.start(actor.run)
    records = [await submit(writer, actor, f"+155520000{i:02d}") for i in range(5)]
    await wait_for(lambda: actor.statistics().degraded is not None)
    await trio.sleep(600)
    assert "190" in (actor.statistics().degraded or "")
    assert api.attempts == [] and all(record_of(writer, r.sid).status == "queued" for r in records)
    token_file.write_text("EAAgood\n")
    await wait_for(lambda: len(api.sent) == 5)
    assert actor.statistics().degraded is None
    assert all(record_of(writer, r.sid).status == "sent" for r in records)


async def test_a_degraded_actor_still_stops(autojump_clock: trio.testing.MockClock, writer: Store) -> None:
    actor, _ = cloud_actor(writer, token=lambda: "EAAexpired")
    record = await submit(writer, None, "+15552000001")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await wait_for(lambda: actor.statistics().degraded is not None)
            actor.stop()
    assert record_of(writer, record.sid).status == "queued"
    assert writer.count(b"outbox", number_key(NUMBER)) == 1


async def test_bearer_refresh_never_blocks_and_refusal_waits_for_a_new_token(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = ["EAAone"]
    creds = BearerCredentials(lambda: source[0], recheck=5.0)
    await nursery.start(creds.run)
    with trio.fail_after(1):
        await creds.refresh(creds.token)  # what `wadispatch token refresh` does: nothing new, no wait
    assert creds.token == "EAAone" and creds.valid
    creds.refused("EAAone")
    assert not creds.valid
    source[0] = "EAAtwo"
    with trio.fail_after(6):
        await creds.wait_ready()
    assert (creds.token, creds.refreshes, creds.auth_header()) == ("EAAtwo", 1, b"Bearer EAAtwo")
    creds.refused("EAAone")  # a late report about the old token changes nothing
    assert creds.valid
