from __future__ import annotations

import structlog
import structlog.testing
import trio
import trio.testing

from actors.timers import Timers


async def test_fires_at_each_deadline_in_order(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    timers = Timers()
    fired: list[tuple[str, float]] = []
    await nursery.start(timers.run)
    for name, at in (("c", 30.0), ("a", 10.0), ("b", 20.0), ("a2", 10.0)):
        timers.call_at(at, lambda n=name: fired.append((n, trio.current_time())))
    await trio.sleep(40)
    assert fired == [("a", 10.0), ("a2", 10.0), ("b", 20.0), ("c", 30.0)]


async def test_an_earlier_timer_cuts_the_current_wait_short(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    timers = Timers()
    fired: list[float] = []
    await nursery.start(timers.run)
    timers.call_at(1000.0, lambda: fired.append(trio.current_time()))
    await trio.sleep(1)  # the timers' task now sleeps until 1000
    timers.call_at(5.0, lambda: fired.append(trio.current_time()))
    timers.call_at(0.0, lambda: fired.append(trio.current_time()))  # already due
    await trio.sleep(2000)
    assert fired == [1.0, 5.0, 1000.0]


async def test_a_cancelled_timer_never_fires(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    timers = Timers()
    fired: list[int] = []
    await nursery.start(timers.run)
    keep = timers.call_at(10.0, lambda: fired.append(1))
    drop = timers.call_at(5.0, lambda: fired.append(2))
    drop.cancel()
    drop.cancel()  # idempotent
    assert keep.active and not drop.active
    await trio.sleep(20)
    assert fired == [1] and not keep.active


async def test_cancelled_entries_are_compacted(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """An actor reschedules its chores by cancel + call_at: the heap must not grow with them."""
    timers = Timers()
    fired: list[int] = []
    await nursery.start(timers.run)
    timer = timers.call_at(1e4, lambda: fired.append(0))
    for i in range(1, 1000):
        timer.cancel()
        timer = timers.call_at(1e4 + i, lambda i=i: fired.append(i))
    assert len(timers) < 200
    await trio.sleep(2e4)
    assert fired == [999]


async def test_a_failing_callback_is_logged_and_the_others_still_fire(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    timers = Timers()
    fired: list[float] = []
    await nursery.start(timers.run)

    def broken() -> None:
        raise RuntimeError("bug")

    with structlog.testing.capture_logs() as logs:
        timers.call_at(1.0, broken)
        timers.call_at(1.0, lambda: fired.append(trio.current_time()))
        timers.call_at(2.0, lambda: fired.append(trio.current_time()))
        await trio.sleep(3)
    assert fired == [1.0, 2.0]
    assert [entry["event"] for entry in logs] == ["timer.callback_failed"]
