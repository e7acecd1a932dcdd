"""The fair share, and which buckets a process takes or lets go."""

from __future__ import annotations

import pytest

from dispatcher.ownership.balance import fair_share, to_release, to_take


@pytest.mark.parametrize(
    ("buckets", "live", "share"), [(1, 1, 1), (1, 3, 1), (8, 3, 3), (8, 2, 4), (8, 8, 1), (8, 0, 8)]
)
def test_the_fair_share_is_buckets_over_live_rounded_up(buckets: int, live: int, share: int) -> None:
    assert fair_share(buckets, live) == share


def test_shares_cover_every_bucket_however_many_processes() -> None:
    for buckets in (1, 2, 4, 8, 16, 64):
        for live in range(1, 20):
            assert fair_share(buckets, live) * live >= buckets


def test_no_buckets_is_a_mistake() -> None:
    with pytest.raises(ValueError, match=r"^buckets must be at least 1, not 0$"):
        fair_share(0, 1)


def test_takes_free_buckets_from_its_offset_up_to_the_share() -> None:
    assert to_take([0, 1, 2, 5, 7], owned=1, share=3, start=5, buckets=8) == [5, 7]
    assert to_take([0, 1], owned=3, share=3, start=0, buckets=8) == []


def test_lets_go_of_the_extras_only() -> None:
    assert to_release({0, 3, 6, 7}, share=2) == [6, 7]
    assert to_release({0, 3}, share=2) == []
