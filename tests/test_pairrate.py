"""The per-recipient pair rate: bursts, then one per interval; Meta's 4^X back-off."""

from __future__ import annotations

import pytest

from actors.pairrate import PairLimiter


def test_burst_then_one_per_interval() -> None:
    pair = PairLimiter(6.0, 3)
    now = 100.0
    for _ in range(3):
        assert pair.ready_at("a", now) == now
        pair.take("a", now)
    assert pair.ready_at("a", now) == pytest.approx(106.0)
    assert pair.ready_at("b", now) == now  # other recipients are unaffected
    pair.take("a", 106.0)
    assert pair.ready_at("a", 106.0) == pytest.approx(112.0)


def test_a_burst_borrows_from_the_future() -> None:
    pair = PairLimiter(6.0, 45)
    for _ in range(20):
        pair.take("a", 0.0)
    # 20 at once: the next ones come at the sustained rate only after the borrowed time.
    for _ in range(25):
        pair.take("a", 0.0)
    assert pair.ready_at("a", 0.0) == pytest.approx(6.0)


def test_penalty_is_four_to_the_x_and_resets_on_success() -> None:
    pair = PairLimiter(6.0, 45)
    waits = [pair.penalize("a", 0.0) for _ in range(4)]
    assert waits == [1.0, 4.0, 16.0, 64.0]
    assert pair.ready_at("a", 0.0) == 64.0
    pair.succeeded("a")
    assert pair.penalize("a", 100.0) == 1.0
    assert pair.penalties == 5


def test_penalty_is_capped() -> None:
    pair = PairLimiter(6.0, 45)
    waits = [pair.penalize("a", 0.0) for _ in range(10)]
    assert max(waits) == 4.0**6


def test_idle_recipients_are_forgotten() -> None:
    pair = PairLimiter(1.0, 1)
    for i in range(4096):
        pair.take(str(i), float(i))
    assert len(pair) < 10


@pytest.mark.parametrize(("interval", "burst"), [(-1.0, 1), (1.0, 0)])
def test_bad_settings_are_refused(interval: float, burst: int) -> None:
    with pytest.raises(ValueError):
        PairLimiter(interval, burst)
