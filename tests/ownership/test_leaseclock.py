"""The lease arithmetic, on trio's MockClock: when sends may start, and when they must not."""

from __future__ import annotations

import math

import pytest
import trio
import trio.lowlevel
import trio.testing

from dispatcher.ownership.leaseclock import BucketGate, LeaseClock, LeaseTiming

TIMING = LeaseTiming(ttl=10.0, margin=1.0, send_timeout=3.0, grace=2.0)


def test_sends_may_start_until_the_keepalive_send_time_plus_ttl_less_margin_and_send_timeout() -> None:
    clock = LeaseClock(TIMING)
    assert clock.until == -math.inf  # closed until the first renewal
    clock.renewed(sent_at=100.0, ttl=10)
    assert clock.until == 106.0
    assert clock.lapses_by() == 110.0
    assert clock.valid(105.999) and not clock.valid(106.0)


async def test_a_slow_keepalive_answer_counts_from_when_it_was_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = LeaseClock(TIMING)
    sent_at = trio.current_time()
    await trio.sleep(4.0)  # the answer took 4 s: etcd may have renewed at any instant of those
    clock.renewed(sent_at, 10)
    assert clock.until == sent_at + 6.0  # not answered_at + 6


def test_an_older_renewal_never_moves_the_window_back() -> None:
    clock = LeaseClock(TIMING)
    clock.renewed(sent_at=50.0, ttl=10)
    clock.renewed(sent_at=40.0, ttl=10)  # a late answer to an earlier keepalive
    assert clock.until == 56.0


def test_a_lapsed_lease_closes_at_once() -> None:
    clock = LeaseClock(TIMING)
    clock.renewed(sent_at=0.0, ttl=10)
    clock.lapsed()
    assert not clock.valid(0.0)


def test_keepalives_come_three_times_a_send_window() -> None:
    assert TIMING.send_window == 6.0
    assert TIMING.keepalive_every == 2.0


@pytest.mark.parametrize(
    ("ttl", "margin", "send_timeout", "message"),
    [
        (5.0, 1.0, 4.0, r"^ttl \(5 s\) must exceed margin \+ send_timeout \(1 \+ 4 s\)"),
        (0.0, 0.0, 0.0, r"^ttl must be positive"),
        (5.0, -1.0, 1.0, r"^ttl must be positive"),
    ],
)
def test_timings_that_leave_no_send_window_are_refused(
    ttl: float, margin: float, send_timeout: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseTiming(ttl=ttl, margin=margin, send_timeout=send_timeout, grace=0.0)


async def test_a_new_bucket_stays_shut_for_its_grace(autojump_clock: trio.testing.MockClock) -> None:
    clock = LeaseClock(TIMING)
    clock.renewed(trio.current_time(), 10)
    gate = BucketGate(clock, opens_at=trio.current_time() + TIMING.grace)
    assert gate.send_until() == -math.inf
    start = trio.current_time()
    await gate.wait_open()
    assert trio.current_time() == start + 2.0
    assert gate.send_until() == clock.until


async def test_a_gate_waits_for_a_renewal_once_the_window_closed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    clock = LeaseClock(TIMING)
    clock.renewed(0.0, 10)
    gate = BucketGate(clock, opens_at=0.0)
    await trio.sleep_until(6.0)
    assert trio.current_time() >= gate.send_until()  # the actor would wait now
    opened_at: list[float] = []

    async def wait() -> None:
        await gate.wait_open()
        opened_at.append(trio.current_time())

    nursery.start_soon(wait)
    await trio.sleep(30.0)
    assert opened_at == []  # no keepalive succeeded: still shut
    clock.renewed(trio.current_time(), 10)
    await trio.lowlevel.checkpoint()
    await trio.testing.wait_all_tasks_blocked()
    assert opened_at == [36.0]
