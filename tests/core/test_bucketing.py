"""Bucket arithmetic: sha256(number) mod B, the slot a sid carries, and the counts allowed."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.core.bucketing import (
    MAX_BUCKETS,
    BucketCountError,
    bucket_of,
    check_count,
    sid_slot,
    sid_time_ms,
    slot_of,
)
from dispatcher.core.models import SidBatch, new_sid

numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
counts = st.integers(min_value=0, max_value=16).map(lambda k: 1 << k)


def sha256_mod(number: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(number.encode()).digest(), "big") % count


@given(numbers, counts)
def test_the_bucket_is_sha256_of_the_number_mod_the_count(number: str, count: int) -> None:
    assert bucket_of(number, count) == sha256_mod(number, count)


@given(numbers, counts, st.sampled_from(["SM", "MM", "ME"]))
def test_a_sid_names_its_numbers_bucket_under_every_count(number: str, count: int, prefix: str) -> None:
    sid = new_sid(prefix, slot_of(number))
    assert len(sid) == 34 and sid.startswith(prefix) and int(sid[2:], 16) >= 0
    slot = sid_slot(sid)
    assert slot == sha256_mod(number, 1 << 16)
    assert slot & (count - 1) == bucket_of(number, count)


@given(st.lists(numbers, min_size=1, max_size=50))
def test_a_batch_mints_distinct_sids_each_with_its_slot(batch_numbers: list[str]) -> None:
    batch = SidBatch("SM", len(batch_numbers))
    sids = [batch.mint(slot_of(n)) for n in batch_numbers]
    assert len(set(sids)) == len(sids)
    assert [sid_slot(s) for s in sids] == [slot_of(n) for n in batch_numbers]
    assert len({sid_time_ms(s) for s in sids}) == 1  # one clock read for the batch
    with pytest.raises(IndexError):
        batch.mint(0)


@pytest.mark.parametrize("count", [0, 3, 6, 12, 100, MAX_BUCKETS + 1, MAX_BUCKETS * 2])
def test_a_count_that_is_not_a_power_of_two_up_to_65536_is_refused(count: int) -> None:
    with pytest.raises(BucketCountError, match=r"power of two from 1 to 65536 \(got"):
        check_count(count)


@pytest.mark.parametrize("sid", ["", "SM123", "SM" + "g" * 32, "SM" + "0" * 33, "not a sid at all, no"])
def test_a_malformed_sid_names_no_slot(sid: str) -> None:
    assert sid_slot(sid) is None


def test_numbers_spread_over_the_buckets() -> None:
    """1,000 sequential numbers over 8 buckets: no bucket gets less than half or more than twice its share."""
    counts = [0] * 8
    for i in range(1000):
        counts[bucket_of(f"+1555{i:07d}", 8)] += 1
    assert min(counts) > 125 / 2 and max(counts) < 125 * 2
