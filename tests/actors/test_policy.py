"""DeliveryPolicy's decisions on their own: give up or back off, and for how long."""

from __future__ import annotations

from actors.outcome import Retry
from actors.policy import (
    AMBIGUOUS_FAILED,
    GAVE_UP,
    PAIR_GAVE_UP,
    BackOff,
    DeliveryPolicy,
    GiveUp,
)


def upper_bound(low: float, high: float) -> float:
    return high  # the jitter at its largest: the backoff's ceiling


def test_backoff_doubles_to_its_cap() -> None:
    policy = DeliveryPolicy(backoff_base=0.5, backoff_cap=4.0, jitter=upper_bound)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_the_servers_delay_is_kept_exactly() -> None:
    policy = DeliveryPolicy(jitter=upper_bound)
    assert policy.after_retry(Retry("429", after=7.0, rate_limited=True), 1) == BackOff(7.0)


def test_gives_up_after_max_attempts_or_the_kinds_own_cap() -> None:
    policy = DeliveryPolicy(max_attempts=3, backoff_base=1.0, jitter=upper_bound)
    assert policy.after_retry(Retry("503"), 2) == BackOff(2.0)
    assert policy.after_retry(Retry("503"), 3) == GiveUp(*GAVE_UP)
    unknown = Retry("code 999", cap=2, gives_up_with=(63999, "unknown"))
    assert policy.after_retry(unknown, 1) == BackOff(1.0)
    assert policy.after_retry(unknown, 2) == GiveUp(63999, "unknown")
    assert DeliveryPolicy(max_attempts=1).after_retry(unknown, 1) == GiveUp(63999, "unknown")


def test_an_ambiguous_send_is_retried_or_failed_at_once_as_configured() -> None:
    lost = Retry("ResponseLostError", ambiguous=True)
    assert isinstance(DeliveryPolicy(on_ambiguous="retry").after_retry(lost, 1), BackOff)
    assert DeliveryPolicy(on_ambiguous="fail").after_retry(lost, 1) == GiveUp(*AMBIGUOUS_FAILED)
    # A send that certainly never left is retried under either policy.
    assert isinstance(DeliveryPolicy(on_ambiguous="fail").after_retry(Retry("ConnectError"), 1), BackOff)


def test_pair_rate_refusals_wait_until_the_attempts_run_out() -> None:
    policy = DeliveryPolicy(max_attempts=4)
    assert policy.after_pair_refusal(3) is None
    assert policy.after_pair_refusal(4) == GiveUp(*PAIR_GAVE_UP)
