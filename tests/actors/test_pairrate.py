"""The per-recipient pair rate as Meta counts it (reference 2.5): bursts borrow from future quota, so after
n messages in a burst the next waits n x 6 s; Meta's 4^X back-off when it still refuses.

The limiter's schedule is checked against the simulator's ``PairGate`` (Meta's rule, written separately
from the same reference): whatever the limiter lets go, the gate admits, even when each message reaches
"Meta" up to ``margin`` later than the limiter counted it."""

from __future__ import annotations

import copy

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.pacing.pairrate import SKEW_MARGIN, PairLimiter
from dispatcher.simulator.ratelimit import PairGate


def send_all(pair: PairLimiter, recipient: str, count: int, now: float) -> list[float]:
    """Send ``count`` messages as early as the limiter allows, from ``now``: their times."""
    times = []
    for _ in range(count):
        now = pair.ready_at(recipient, now)
        pair.take(recipient, now)
        times.append(now)
    return times


def test_five_at_once_then_the_sixth_waits_for_the_borrowed_30_s() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    assert send_all(pair, "a", 5, 100.0) == [100.0] * 5
    # The 6th comes 7 s later: the burst's window is over and 5 x 6 s are owed.
    assert pair.ready_at("a", 107.0) == pytest.approx(130.0)
    assert pair.ready_at("b", 107.0) == 107.0  # other recipients are unaffected
    pair.take("a", 130.0)
    assert pair.ready_at("a", 130.0) == 130.0  # owed nothing at 130: a new burst, as Meta counts it


def test_a_burst_of_twenty_means_about_two_minutes() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    send_all(pair, "a", 20, 0.0)
    assert pair.ready_at("a", 6.0) == pytest.approx(120.0)


def test_a_burst_is_at_most_burst_messages_within_one_interval() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    assert send_all(pair, "a", 46, 0.0) == [0.0] * 45 + [pytest.approx(270.0)]
    pair = PairLimiter(6.0, 3, margin=0.0)
    for t in (0.0, 2.0, 5.9):  # spread over the window still counts as one burst
        assert pair.ready_at("a", t) == t
        pair.take("a", t)
    assert pair.ready_at("a", 5.95) == pytest.approx(18.0)


def test_steady_one_per_interval_never_waits() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    for k in range(50):
        assert pair.ready_at("a", 6.0 * k) == 6.0 * k
        pair.take("a", 6.0 * k)


def test_faster_than_one_per_interval_still_owes_one_interval_each() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    times = send_all(pair, "a", 1, 0.0)
    for k in range(1, 40):  # asks every 3 s
        times.append(pair.ready_at("a", max(3.0 * k, times[-1])))
        pair.take("a", times[-1])
    # Held messages go out together when the debt is repaid (a new burst), so the sends bunch, but
    # 40 messages still owe 40 x 6 s: nothing more before 240 s.
    assert times[:6] == [0.0, 3.0, 12.0, 12.0, 12.0, 15.0]
    assert pair.ready_at("a", times[-1] + 6.0) == pytest.approx(6.0 * len(times))


def test_idle_recovery_gives_a_whole_burst_back() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    send_all(pair, "a", 45, 0.0)
    assert pair.ready_at("a", 269.0) == pytest.approx(270.0)
    assert send_all(pair, "a", 45, 1000.0) == [1000.0] * 45


def test_the_margin_closes_the_window_early_and_repays_the_debt_late() -> None:
    pair = PairLimiter(6.0, 45, margin=0.25)
    send_all(pair, "a", 5, 0.0)
    assert pair.ready_at("a", 5.7) == 5.7
    assert pair.ready_at("a", 5.8) == pytest.approx(30.25)  # window closed 0.25 s early; 5 x 6 s + 0.25
    steady = PairLimiter(6.0, 45, margin=0.25)
    assert send_all(steady, "b", 3, 0.0) == [0.0, 0.0, 0.0]
    assert steady.ready_at("b", 18.0) == pytest.approx(18.25)


def test_default_margin_fits_short_intervals() -> None:
    assert PairLimiter(6.0, 45).margin == SKEW_MARGIN
    assert PairLimiter(0.2, 45).margin == pytest.approx(0.05)  # a quarter of the interval at most


def test_a_refusal_gives_the_share_back_ends_the_burst_and_backs_off() -> None:
    pair = PairLimiter(6.0, 45, margin=0.0)
    send_all(pair, "a", 6, 0.0)  # we counted 6 in the burst; Meta counted the 6th outside it
    assert pair.penalize("a", 6.1) == 1.0
    # Not 1 s later (4^0) but when the 5 Meta counted are repaid: 30 s, not 92 s of 4^X retries.
    assert pair.ready_at("a", 7.1) == pytest.approx(30.0)
    pair.take("a", 30.0)
    pair.succeeded("a")
    assert pair.penalize("a", 30.0) == 1.0  # the exponent started again after the success


def test_penalty_is_four_to_the_x_and_resets_on_success() -> None:
    pair = PairLimiter(6.0, 45)
    waits = [pair.penalize("a", 0.0) for _ in range(4)]  # a debt we never counted (a restart)
    assert waits == [1.0, 4.0, 16.0, 64.0]
    assert pair.ready_at("a", 0.0) == 64.0
    pair.succeeded("a")
    assert pair.penalize("a", 100.0) == 1.0
    assert pair.penalties == 5


def test_penalty_is_capped() -> None:
    pair = PairLimiter(6.0, 45)
    waits = [pair.penalize("a", 0.0) for _ in range(10)]
    assert max(waits) == 4.0**6


def test_idle_recipients_are_forgotten_and_debtors_are_not() -> None:
    pair = PairLimiter(1.0, 500, margin=0.0)
    send_all(pair, "debtor", 500, 0.0)  # owes until 500 s
    for i in range(4096 - 500):
        pair.take(str(i), 100.0 + i * 0.001)  # each owes 1 s
    # The sweep ran at the 4096th take (about 103.6 s): only the last second's recipients remain.
    assert len(pair) < 1100 and pair.ready_at("debtor", 200.0) == pytest.approx(500.0)


@pytest.mark.parametrize(
    ("interval", "burst", "margin"),
    [(-1.0, 1, 0.0), (0.0, 1, 0.0), (1.0, 0, 0.0), (6.0, 1, 3.5), (6.0, 1, -0.1)],
)
def test_bad_settings_are_refused(interval: float, burst: int, margin: float) -> None:
    with pytest.raises(ValueError):
        PairLimiter(interval, burst, margin)


# Asks: (gap after the previous ask, recipient); delays: how much later than counted each reaches Meta.
# Gaps near the edges of a window or a debt are where a wrong model shows.
_gaps = st.one_of(
    st.floats(0.0, 40.0), st.sampled_from([0.0, 0.1, 5.7, 5.8, 5.9, 5.99, 6.0, 6.1, 11.9, 12.0])
)
_asks = st.lists(st.tuples(_gaps, st.sampled_from("abc")), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(asks=_asks, burst=st.integers(1, 8), margin=st.sampled_from([0.0, 0.25]), data=st.data())
def test_what_the_limiter_lets_go_meta_admits(
    asks: list[tuple[float, str]], burst: int, margin: float, data: st.DataObject
) -> None:
    pair = PairLimiter(6.0, burst, margin=margin)
    gates = {r: PairGate(6.0, burst) for r in "abc"}
    now = 0.0
    last_arrival = dict.fromkeys("abc", 0.0)
    for gap, recipient in asks:
        now += gap
        at = pair.ready_at(recipient, now)
        pair.take(recipient, at)
        # Meta sees it up to ``margin`` later, never before the previous message to that recipient.
        delay = data.draw(st.one_of(st.sampled_from([0.0, margin]), st.floats(0.0, margin)))
        arrival = max(at + delay, last_arrival[recipient])
        last_arrival[recipient] = arrival
        assert gates[recipient].admit(arrival), (recipient, at, arrival)


@settings(max_examples=200, deadline=None)
@given(asks=_asks, burst=st.integers(1, 8))
# b's debt sums to 5.999999999999999 at 6.0: repaid for Meta's model, so for the limiter (hypothesis found it)
@example(asks=[(0.0, "b"), (5.8, "a"), (0.1, "a"), (0.1, "b"), (0.0, "b")], burst=2)
def test_without_margin_the_limiter_waits_no_longer_than_meta_requires(
    asks: list[tuple[float, str]], burst: int
) -> None:
    pair = PairLimiter(6.0, burst, margin=0.0)
    gates = {r: PairGate(6.0, burst) for r in "abc"}
    now = 0.0
    for gap, recipient in asks:
        now += gap
        at = pair.ready_at(recipient, now)
        if at > now + 0.01:  # held back: Meta would have refused it a little earlier too
            assert not copy.copy(gates[recipient]).admit(max(now, at - 0.01))
        pair.take(recipient, at)
        assert gates[recipient].admit(at)
