"""Which daemon does a multi-bucket request's share of each bucket, and the part header's buckets."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from dispatcher.ops.bucket_parts import Placement, names, parse, place
from dispatcher.ownership.interface import Owner

ME, A, B = (
    Owner("me", "http://127.0.0.1:1", 1),
    Owner("a", "http://127.0.0.1:2", 1),
    Owner("b", "http://127.0.0.1:3", 1),
)


class Table:
    owner_id = "me"

    def __init__(self, owners: dict[int, Owner | None]) -> None:
        self._owners = owners

    def owner(self, bucket: int) -> Owner | None:
        return self._owners[bucket]


def test_buckets_go_here_to_their_owner_once_each_or_nowhere() -> None:
    table = Table({0: ME, 1: A, 2: None, 3: B, 4: A, 5: ME})
    placed = place(range(6), lambda b: b == 0, table)
    # Bucket 5 is ours by the table but not served here yet: between two owners, as bucket 2.
    assert placed == Placement(local=[0], unowned=[2, 5], remote=[(A, [1, 4]), (B, [3])])


@given(st.lists(st.integers(-3, 20), max_size=6))
def test_a_part_header_is_its_bucket_indexes_or_refused(indexes: list[int]) -> None:
    parsed = parse(",".join(map(str, indexes)), 16)
    if indexes and all(0 <= i < 16 for i in indexes):
        assert parsed == sorted(set(indexes))
    else:
        assert parsed is None


def test_malformed_part_headers_are_refused() -> None:
    for header in ("", "x", "1,,2", " ", "1;2", "0x1"):
        assert parse(header, 16) is None, header
    assert parse(" 3 , 1", 16) == [1, 3]  # int() takes the spaces a header may carry
    assert names([1, 3]) == "1, 3"
