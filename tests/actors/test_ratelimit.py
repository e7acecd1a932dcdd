from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.pacing.ratelimit import TokenBucket


async def test_burst_then_sustained_rate(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=20.0, burst=60, headroom=0)
    start = trio.current_time()
    times = []
    for _ in range(200):
        await bucket.acquire()
        times.append(trio.current_time() - start)
    assert sum(1 for t in times if t == 0.0) == 60
    # 140 more at 20/s after the burst
    assert times[-1] == pytest.approx(140 / 20.0)
    for i, t in enumerate(times):
        assert i + 1 <= 60 + 20.0 * t + 1e-9  # never ahead of burst + rate * elapsed


async def test_headroom_keeps_one_slot_back(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=10.0, burst=5)  # headroom=1 by default
    start = trio.current_time()
    for _ in range(4):
        await bucket.acquire()
    assert trio.current_time() == start
    await bucket.acquire()
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_retry_after_pushes_slots_back(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=100.0, burst=1, headroom=0)
    await bucket.acquire()
    start = trio.current_time()
    bucket.delay_next(2.0)
    await bucket.acquire()
    assert trio.current_time() - start >= 2.0


def test_bad_limits_are_rejected() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="rate"):
            TokenBucket(rate=0, burst=1)
        with pytest.raises(ValueError, match="burst"):
            TokenBucket(rate=1, burst=0)

    trio.run(main)


async def test_throttled_cuts_once_per_cooldown_then_recovers(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=20.0, burst=20, decrease=0.5, recovery=0.1)
    assert bucket.throttled() is True
    assert bucket.current_rate() == pytest.approx(10.0)
    assert bucket.throttled() is False  # the other sends in flight come back 429 together: one cut
    await trio.sleep(1.0)
    assert bucket.current_rate() == pytest.approx(12.0)  # + 10% of 20/s per second
    # While slowed there is no burst: sends are spaced at the current rate.
    start = trio.current_time()
    await bucket.acquire()
    await bucket.acquire()
    assert trio.current_time() - start >= 1 / 12.5
    await trio.sleep(10.0)
    assert bucket.current_rate() == 20.0


async def test_bad_aimd_parameters_are_refused() -> None:
    for kwargs in ({"decrease": 1.0}, {"decrease": 0.0}, {"recovery": 0.0}):
        with pytest.raises(ValueError):
            TokenBucket(rate=1.0, burst=1, **kwargs)


async def test_free_slot_is_still_a_checkpoint(autojump_clock: trio.testing.MockClock) -> None:
    """The no-wait fast path yields and honours cancellation like a sleep would."""
    bucket = TokenBucket(rate=10.0, burst=5, headroom=0)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await bucket.acquire()
    # The cancelled waiter forfeited its slot: four of the burst are left, then 10/s.
    start = trio.current_time()
    for _ in range(4):
        await bucket.acquire()
    assert trio.current_time() == start
    await bucket.acquire()
    assert trio.current_time() == pytest.approx(start + 0.1)
