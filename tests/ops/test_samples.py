"""The console's per-second samples: deltas of the /metrics counters on a 1 s timer (MockClock)."""

from __future__ import annotations

import math

import attrs
import pytest
import trio

from actors.statistics import ActorStatistics, SendCounts
from dispatcher.core.clock import TrioWallClock
from dispatcher.ops.samples import COARSE_EVERY, SECOND_SLOTS, Ring, Sampler, quantile


@attrs.define
class FakeActor:
    """An actor as the sampler sees it: plain counters the test moves on, and their snapshot."""

    number: str
    counts: SendCounts = attrs.Factory(SendCounts)
    queued: int = 0
    snapshots: int = 0  # statistics() calls: what a tick costs

    def pending(self) -> int:
        return self.queued

    def statistics(self) -> ActorStatistics:
        self.snapshots += 1
        c = self.counts
        return ActorStatistics(
            number=self.number, running=True, pending=self.queued, in_flight=0, sent=c.sent,
            failed=c.failed, retries=0, ambiguous=0, rate_limited=c.rate_limited, rate=20.0, burst=60,
            accepted=c.accepted, delivered=c.delivered, read=c.read,
            failed_by_code=tuple(sorted(c.failed_by_code.items())),
            send_latency=c.send_latency.snapshot(), pair_limited=c.pair_limited, send_rate=20.0,
        )  # fmt: skip

    def bump(self, **counts: int) -> None:
        for name, n in counts.items():
            setattr(self.counts, name, getattr(self.counts, name) + n)


def actor(number: str, *, queued: int = 0, **counts: int) -> FakeActor:
    fake = FakeActor(number, queued=queued)
    fake.bump(**counts)
    return fake


def sampler_over(actors: list[FakeActor]) -> Sampler:
    return Sampler(actors=lambda: actors, outbox_depth=lambda s: s.pending, wall=TrioWallClock(start=1e9))


async def test_ticks_once_a_second_and_counts_what_changed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    busy, idle = actor("+15550000001", sent=500), actor("+15550000002")
    sampler = sampler_over([busy, idle])
    await nursery.start(sampler.run)
    assert sampler.ticks == 1  # the first tick only learns the counters: 500 sent before it
    assert not sampler.active(busy.number)
    await trio.sleep(0.5)  # the test moves the counters between ticks
    for second in range(12):
        busy.bump(sent=second, accepted=2, rate_limited=1 if second == 5 else 0)
        await trio.sleep(1.0)
    assert sampler.ticks == 13 and trio.current_time() == 12.5
    assert idle.snapshots == 1  # the first tick learns its counters; then an idle number costs no snapshot
    assert sampler.active("+15550000001") and not sampler.active("+15550000002")
    assert sampler.recent("+15550000001", "sent", 300) == sum(range(12))
    assert sampler.recent("+15550000001", "sent", 3) == 9 + 10 + 11
    assert sampler.recent("+15550000001", "rate_limited", 300) == 1
    assert sampler.recent("+15550000002", "sent", 300) == 0
    assert sampler.sparkline("+15550000001", seconds=4) == [8.0, 9.0, 10.0, 11.0]
    # An idle number's sparkline is zeros as long as the others' (the page draws it flat).
    assert sampler.sparkline("+15550000002", seconds=4) == [0.0] * 4
    fine = sampler.fine_plot("+15550000001", seconds=5)
    assert fine.series["accepted"] == [2.0] * 5 and fine.series["rate"] == [20.0] * 5
    assert fine.times == [1e9 + t for t in (8.0, 9.0, 10.0, 11.0, 12.0)]
    # One 10 s slot closed at tick 10: per-second averages over its ticks (2..10, as it began at 2).
    coarse = sampler.coarse_plot("+15550000001")
    assert len(coarse.times) == 1 == len(coarse.series["sent"])
    assert coarse.series["sent"] == [pytest.approx(sum(range(9)) / COARSE_EVERY)]


async def test_latency_percentiles_come_from_the_histograms_growth_in_each_slot(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    one = actor("+15550000001")
    for _ in range(1000):
        one.counts.send_latency.observe(9.0)  # before the sampler: not in any slot
    sampler = sampler_over([one])
    await nursery.start(sampler.run)
    await trio.sleep(0.5)
    for _ in range(2 * COARSE_EVERY):
        for value in (0.02,) * 8 + (0.2, 2.0):
            one.counts.send_latency.observe(value)
        one.bump(sent=10)
        await trio.sleep(1.0)
    plot = sampler.coarse_plot("+15550000001")
    p50, p90, p99 = (plot.series[name][-1] for name in ("p50", "p90", "p99"))
    assert 0.01 < p50 <= 0.025 and 0.1 < p90 <= 0.25 and 1.0 < p99 <= 2.5


def test_quantile_is_prometheus_histogram_quantile() -> None:
    bounds = (0.1, 0.5, 1.0, math.inf)
    assert quantile(0.5, bounds, (0, 10, 10, 10)) == pytest.approx(0.3)  # middle of (0.1, 0.5]
    assert quantile(0.99, bounds, (5, 5, 5, 10)) == 1.0  # in +Inf: the last finite bound
    assert quantile(0.25, bounds, (10, 10, 10, 10)) == pytest.approx(0.025)
    assert math.isnan(quantile(0.5, bounds, (0, 0, 0, 0)))
    assert math.isnan(quantile(0.5, bounds, ()))


def test_ring_keeps_the_newest_rows_oldest_first() -> None:
    ring = Ring(4, 2)
    for i in range(6):
        ring.push([i, -i])
    assert ring.column(0, 10) == [2.0, 3.0, 4.0, 5.0] and ring.column(1, 2) == [-4.0, -5.0]


async def test_numbers_come_and_go_with_the_fleet(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    first, second = actor("+15550000001", queued=3), actor("+15550000002")
    fleet = [first]
    sampler = sampler_over(fleet)
    await nursery.start(sampler.run)
    await trio.sleep(1.5)
    assert sampler.active("+15550000001")  # a non-empty outbox is activity
    assert sampler.fine_plot("+15550000001", 5).series["outbox"] == [3.0, 3.0]  # ticks at 0 and 1
    fleet[:] = [second]  # a reload replaced the number
    second.bump(sent=4)  # counted before its first tick: not this tick's
    await trio.sleep(1.0)
    assert not sampler.active("+15550000001") and not sampler.active("+15550000002")
    second.bump(sent=1)
    await trio.sleep(1.0)
    assert sampler.recent("+15550000002", "sent", SECOND_SLOTS) == 1


async def test_a_blocked_loop_skips_ticks_instead_of_catching_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sampler = sampler_over([actor("+15550000001")])
    await nursery.start(sampler.run)
    await trio.sleep(0.5)
    autojump_clock.jump(5.0)  # as if the loop had been blocked for 5 s
    await trio.sleep(2.0)
    assert sampler.ticks <= 4
