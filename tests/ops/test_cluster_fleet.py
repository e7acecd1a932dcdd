"""A cluster's fleet page from each daemon's share: whatever the split of the numbers over the daemons,
the sort, the order, the filters and the page, the merged page is the one a single daemon running
every number shows (hypothesis; the reference order written out independently); a daemon that does
not answer is named, the others' numbers still shown."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.ops.cluster_fleet import ClusterFleet
from dispatcher.ops.fleet_view import (
    SORT_KEYS,
    FleetPart,
    FleetQuery,
    FleetRow,
    Standing,
    _order,
    _sort_key,
    _wanted,
    merge,
)
from dispatcher.ownership.interface import Owner
from tests.helpers.buckets import FixedOwners

STATES = ("running", "paused", "degraded")


def row(i: int, state: str, outbox: int, rate: float, token: float | None, channel: str) -> FleetRow:
    return FleetRow(
        number=f"+1555000{i:04d}",
        account="AC" + "0" * 31 + str(i % 2),
        channel=channel,
        state=state,
        outbox=outbox,
        oldest_age=float(outbox * 3) if outbox else None,
        send_rate=rate,
        rate=20.0,
        limited=outbox % 3,
        pair_limited=0,
        parked=0,
        token_expires_in=token,
        tier_used=outbox,
        tier_limit=None if i % 3 else 1000,
        standing=Standing("GREEN") if i % 5 == 0 else Standing(),
        sent=i * 7 % 11,
        failed=i % 4,
        in_flight=0,
        degraded=None,
        spark=[],
    )


rows_strategy = st.lists(
    st.builds(
        row,
        st.integers(0, 9999),
        st.sampled_from(STATES),
        st.integers(0, 5),  # few values: many ties, broken by number
        st.sampled_from([0.0, 1.5, 20.0]),
        st.sampled_from([None, 60.0, 3600.0]),
        st.sampled_from(["onprem", "cloud"]),
    ),
    max_size=40,
    unique_by=lambda r: r.number,
)
queries = st.builds(
    FleetQuery,
    text=st.sampled_from(["", "1", "AC" + "0" * 31 + "1"]),
    state=st.sampled_from(["", *STATES]),
    channel=st.sampled_from(["", "onprem", "cloud"]),
    sort=st.sampled_from(SORT_KEYS),
    descending=st.booleans(),
    page=st.integers(0, 4),
    page_size=st.integers(1, 12),
)


def share(rows: Sequence[FleetRow], query: FleetQuery) -> FleetPart:
    """What ``FleetView.part`` gives for these rows: the matching ones in order, as many as the page needs."""
    matching = [r for r in rows if _wanted(r, query)]
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    ordered = list(matching)
    _order(ordered, query)
    return FleetPart(
        rows=ordered[: (query.page + 1) * query.page_size],
        total=len(matching),
        fleet=len(rows),
        states=states,
    )


def reference(rows: Sequence[FleetRow], query: FleetQuery) -> list[str]:
    """The page's numbers, ordered by an independent comparison: the sort key (flipped when
    descending), equal keys by number ascending."""

    def compare(a: FleetRow, b: FleetRow) -> int:
        ka, kb = _sort_key(a, query.sort), _sort_key(b, query.sort)
        if ka != kb:
            before = ka < kb
            return (1 if before else -1) if query.descending else (-1 if before else 1)
        return -1 if a.number < b.number else 1

    matching = sorted((r for r in rows if _wanted(r, query)), key=functools.cmp_to_key(compare))
    start = query.page * query.page_size
    return [r.number for r in matching[start : start + query.page_size]]


@settings(max_examples=400, deadline=None)
@given(rows=rows_strategy, query=queries, daemons=st.integers(1, 4), seed=st.randoms(use_true_random=False))
def test_a_merged_page_is_the_page_of_one_daemon_running_every_number(
    rows: list[FleetRow], query: FleetQuery, daemons: int, seed: object
) -> None:
    split: list[list[FleetRow]] = [[] for _ in range(daemons)]
    for r in rows:
        split[seed.randrange(daemons)].append(r)  # type: ignore[attr-defined]
    page = merge(query, [share(part, query) for part in split])
    assert [r.number for r in page.rows] == reference(rows, query)
    assert page.total == sum(1 for r in rows if _wanted(r, query))
    assert page.fleet == len(rows)
    assert sum(page.states.values()) == len(rows)
    assert page.unreachable == ()


@attrs.define
class StubView:
    rows: list[FleetRow]

    def part(self, query: FleetQuery) -> FleetPart:
        return share(self.rows, query)


async def test_a_daemon_that_does_not_answer_is_named_and_the_rest_shown(autojump_clock: object) -> None:
    here = [row(1, "running", 0, 1.0, None, "cloud")]
    there = [row(2, "paused", 3, 0.0, 60.0, "onprem")]
    owners = FixedOwners(
        {0: Owner("A", "http://a", 1), 1: Owner("B", "http://b", 1), 2: Owner("C", "http://c", 1), 3: None},
        owner_id="A",
    )
    asked: list[str] = []

    async def ask(address: str, query: FleetQuery) -> FleetPart:
        asked.append(address)
        if address == "http://c":
            await trio.sleep_forever()  # given up after the timeout
        return share(there, query)

    fleet = ClusterFleet(count=4, owners=owners, view=StubView(here), ask=ask, timeout=2.0)  # type: ignore[arg-type]
    start = trio.current_time()
    page = await fleet.page(FleetQuery())
    assert trio.current_time() - start == pytest.approx(2.0)
    assert sorted(asked) == ["http://b", "http://c"]  # each other owner once, never itself
    assert [r.number for r in page.rows] == [here[0].number, there[0].number]
    assert page.unreachable == ("C",)
    assert page.states == {"paused": 1, "running": 1}
