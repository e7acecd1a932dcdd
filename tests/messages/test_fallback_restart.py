"""Fallback across a restart: the index in LMDB is the timer; a new gateway on the same data dir
fires what fell due while it was down, once.

Each run is a gateway, actors and a fallback task over a ``Store`` opened on one path; the
first is stopped (its writer closed, its tasks cancelled, LMDB closed) before the next opens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from dispatcher.core import fallbacks
from dispatcher.core.bucketing import bucket_of
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store
from dispatcher.messages.fallback import idempotency_key
from dispatcher.messages.fallback_plan import FallbackRequest
from dispatcher.messages.rules import SendRequest
from tests.helpers.buckets import open_buckets
from tests.helpers.fallback_world import (
    ACCOUNT,
    CALLBACK,
    CUSTOMER,
    ONE,
    T0,
    TWO,
    FallbackWorld,
    open_world,
)
from tests.helpers.messages import wait_for


@asynccontextmanager
async def run(path: Path, wall_start: float, **world: Any) -> AsyncIterator[FallbackWorld]:
    """One life of the gateway on ``path``, its wall clock starting at ``wall_start``."""
    store = Store(path, map_size=64 << 20, commit_in_thread=False)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            yield await open_world(nursery, store, wall=TrioWallClock(start=wall_start), **world)
            store.close()
            nursery.cancel_scope.cancel()
    finally:
        store.close_env()


async def test_a_deadline_that_fell_due_while_down_fires_at_start(
    autojump_clock: trio.testing.MockClock, store_path: Path
) -> None:
    async with run(store_path, T0) as first:
        primary = await first.create(FallbackRequest(from_=TWO, after="60"))
        await wait_for(lambda: first.record(primary.sid).status == "sent")
        await trio.sleep(10)
        assert first.fallbacks.pending() == 1
    async with run(store_path, T0 + 3600) as second:  # back an hour later
        started = trio.current_time()
        await wait_for(lambda: second.record(primary.sid).fallback_sid is not None)
        assert trio.current_time() - started < 0.1
        fallback_sid = second.record(primary.sid).fallback_sid or ""
        await wait_for(lambda: second.record(fallback_sid).status == "sent")
        assert second.texts(TWO) == ["Your code is 4711"] and second.fallbacks.pending() == 0


async def test_a_deadline_not_yet_due_waits_its_time_after_a_restart(
    autojump_clock: trio.testing.MockClock, store_path: Path
) -> None:
    async with run(store_path, T0) as first:
        primary = await first.create(FallbackRequest(from_=TWO, after="600"))
        await trio.sleep(100)
    async with run(store_path, T0 + 200) as second:
        started = trio.current_time()
        await wait_for(lambda: second.record(primary.sid).fallback_sid is not None)
        assert 400 <= trio.current_time() - started < 400.1  # due at T0 + 600, whichever process


async def test_a_trigger_committed_before_a_crash_fires_after_it(
    autojump_clock: trio.testing.MockClock, store_path: Path
) -> None:
    async with run(store_path, T0, fire=False) as first:  # down before its fallback task ran
        first.transports[ONE].refused.add(CUSTOMER)
        primary = await first.create(FallbackRequest(from_=TWO, error_codes="63003"))
        await wait_for(lambda: first.record(primary.sid).status == "failed")
        assert first.fallbacks.pending() == 1  # committed with the failure
    async with run(store_path, T0 + 5) as second:
        await wait_for(lambda: second.record(primary.sid).fallback_sid is not None)
        assert second.messages() == 2


async def test_a_fallback_committed_before_a_crash_is_linked_not_made_twice(
    autojump_clock: trio.testing.MockClock, store_path: Path
) -> None:
    """The crash fell between the fallback's commit and the link: the next life replays the
    fallback by its idempotency key (the primary's sid) and links it."""
    async with run(store_path, T0, fire=False) as first:
        first.transports[ONE].refused.add(CUSTOMER)
        primary = await first.create(FallbackRequest(from_=TWO, error_codes="63003"))
        await wait_for(lambda: first.record(primary.sid).status == "failed")
        request = SendRequest(
            to=CUSTOMER,
            from_=TWO,
            body="Your code is 4711",
            status_callback=CALLBACK,
            primary_sid=primary.sid,
        )
        made = await first.gateway.create(ACCOUNT, request, idempotency_key=idempotency_key(primary.sid))
        await wait_for(lambda: first.texts(TWO) == ["Your code is 4711"])
    async with run(store_path, T0 + 5) as second:
        await wait_for(lambda: second.record(primary.sid).fallback_sid == made.sid)
        await trio.sleep(60)
        assert second.messages() == 2 and second.texts(TWO) == []  # sent once, by the first life
        assert second.fallbacks.pending() == 0


async def test_a_fallback_across_buckets_is_linked_in_the_primary_s_and_made_once_after_a_crash(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Four buckets: ONE's messages in bucket 1, TWO's in bucket 2. The trigger and the link live
    with the primary, the fallback and its idempotency key with its sender."""
    assert (bucket_of(ONE, 4), bucket_of(TWO, 4)) == (1, 2)
    root = tmp_path / "root"
    async with open_buckets(root, 4) as buckets, trio.open_nursery() as nursery:
        first = await open_world(nursery, buckets, fire=False)
        first.transports[ONE].refused.add(CUSTOMER)
        primary = await first.create(FallbackRequest(from_=TWO, error_codes="63003"))
        await wait_for(lambda: first.record(primary.sid).status == "failed")
        assert fallbacks.pending(buckets.stores[1]) == 1  # with the primary
        request = SendRequest(
            to=CUSTOMER,
            from_=TWO,
            body="Your code is 4711",
            status_callback=CALLBACK,
            primary_sid=primary.sid,
        )
        made = await first.gateway.create(ACCOUNT, request, idempotency_key=idempotency_key(primary.sid))
        held = buckets.message(made.sid)
        assert held is not None and held[0] is buckets.stores[2]
        nursery.cancel_scope.cancel()  # the crash: before the link
    async with open_buckets(root, 4) as buckets, trio.open_nursery() as nursery:
        second = await open_world(nursery, buckets, wall=TrioWallClock(start=T0 + 5))
        await wait_for(lambda: second.record(primary.sid).fallback_sid == made.sid)
        assert second.messages() == 2 and second.fallbacks.pending() == 0
        nursery.cancel_scope.cancel()
