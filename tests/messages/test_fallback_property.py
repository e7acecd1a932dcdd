"""Whatever order a primary's statuses come in and however time passes, it has at most one
fallback, exactly when a small model of the rules says so, and nothing is left in the index.

Each example is its own trio run under MockClock over a fresh LMDB store (the gateway, both
actors, the in-process simulator and the fallback task of ``fallback_world``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core import fallbacks, ledger
from dispatcher.core.models import advances
from dispatcher.core.store import Store
from dispatcher.messages.fallback_plan import FallbackRequest
from tests.helpers.fallback_world import TWO, open_world
from tests.helpers.messages import wait_for

LISTED = 63003
AFTER = 60.5  # never a whole number of seconds: no status lands on the deadline itself

Event = tuple[str, int]  # ("wait", seconds) or (status, error code or 0)

_events = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.integers(0, 90)),
        st.tuples(st.sampled_from(["delivered", "read"]), st.just(0)),
        st.tuples(st.sampled_from(["failed", "undelivered"]), st.sampled_from([LISTED, 63024, 30008])),
    ),
    max_size=6,
)


def expected(events: list[Event], timer: bool) -> tuple[bool, str, bool]:
    """The model: (a fallback was sent, the primary's final status, it arrived after its fallback).
    The deadline asks whether ``delivered`` (or ``read``) came before it; a listed failure sends at
    once, whenever it comes."""
    status, elapsed, fired, arrived, late = "sent", 0.0, False, False, False
    for kind, value in events:
        if kind == "wait":
            if timer and not fired and not arrived and elapsed + value > AFTER:
                fired = True
            elapsed += value
            continue
        if advances(status, kind):
            status = kind
            late = late or (fired and status in fallbacks.DELIVERED)
            if elapsed < AFTER and fallbacks.reached(status, "delivered"):
                arrived = True
            if not fired and kind in fallbacks.FAILED and value == LISTED:
                fired = True
    if timer and not fired and not arrived:
        fired = True  # the deadline comes after the last event
    return fired, status, late


async def scenario(path: Path, events: list[Event], timer: bool) -> None:
    store = Store(path, map_size=64 << 20, commit_in_thread=False)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            world = await open_world(nursery, store)
            request = FallbackRequest(from_=TWO, error_codes=str(LISTED), after=str(AFTER) if timer else None)
            primary = await world.create(request)
            await wait_for(lambda: world.record(primary.sid).status == "sent")
            start = trio.current_time()
            for kind, value in events:
                if kind == "wait":
                    await trio.sleep_until(start + value)
                    start += value
                else:
                    await world.status(primary.sid, kind, value or None)
            await trio.sleep(AFTER + 10)  # past any deadline and poll
            fired, status, late = expected(events, timer)
            record = world.record(primary.sid)
            stored = [ledger.load(raw) for _, raw in store.scan(b"messages", b"")]
            stand_ins = [r for r in stored if r.primary_sid == primary.sid]
            assert len(stand_ins) == int(fired), (events, timer)
            assert (record.fallback_sid is not None) == fired and record.status == status
            assert len(world.texts(TWO)) == int(fired)  # sent at most once
            assert (record.late_status is not None) == late  # a delivery after the fallback, recorded
            assert world.fallbacks.pending() == 0
            store.close()
            nursery.cancel_scope.cancel()
    finally:
        store.close_env()


@settings(max_examples=60, deadline=None)
@given(events=_events, timer=st.booleans())
def test_at_most_one_fallback_exactly_when_the_rules_say(events: list[Event], timer: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(
            scenario, Path(tmp) / "data", events, timer, clock=trio.testing.MockClock(autojump_threshold=0)
        )
