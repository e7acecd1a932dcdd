"""One message's status callbacks arrive in order, over real HTTP (tests/callback_sink.py on 127.0.0.1).

A message's next callback starts only once the previous one was answered (or
given up): a slow or failing first callback holds back that message's later
ones, never another message's, and the order survives a restart of the sender.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from dispatcher.core import callbacks
from dispatcher.core.callbacks import CallbackEntry
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.ssrf import UrlGuard
from dispatcher.core.store import Store
from dispatcher.webhooks.callback_sender import CallbackSender, SenderSettings
from tests.helpers.buckets import as_buckets
from tests.helpers.callback_sink import Hit, Responder, Sink, open_sink

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "order-test-auth-token-0123"
STATUSES = ("sent", "delivered", "read")


def status_entry(url: str, sid: str, status: str) -> CallbackEntry:
    return CallbackEntry(
        kind="status",
        url=url,
        account_sid=ACCOUNT,
        number="+15550000001",
        customer="+15551234567",
        sid=sid,
        params=[("MessageSid", sid), ("MessageStatus", status)],
        created_at=SystemWallClock().now(),
    )


async def queue_statuses(store: Store, url: str, sids: list[str]) -> None:
    """Each status change in a write of its own, messages interleaved (as webhooks come)."""
    for status in STATUSES:
        for sid in sids:
            await store.write(functools.partial(callbacks.queue, entry=status_entry(url, sid, status)))


def statuses(hits: list[Hit], sid: str) -> list[str]:
    return [h.form["MessageStatus"] for h in hits if h.form["MessageSid"] == sid]


@asynccontextmanager
async def running_sender(store: Store, **settings: float) -> AsyncIterator[CallbackSender]:
    defaults = {"backoff_initial": 0.01, "backoff_max": 0.05, "poll_interval": 0.02, "per_destination": 4}
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        sender = CallbackSender(
            buckets=as_buckets(store),
            client=client,
            auth_token={ACCOUNT: TOKEN}.get,
            guard=UrlGuard(["127.0.0.1/32"]),
            wall=SystemWallClock(),
            settings=SenderSettings(**(defaults | settings)),  # type: ignore[arg-type]
        )
        await nursery.start(sender.run)
        try:
            yield sender
        finally:
            nursery.cancel_scope.cancel()


def hold(sid: str, status: str, release: trio.Event) -> Responder:
    async def respond(hit: Hit) -> tuple[int, bytes]:
        if hit.form["MessageSid"] == sid and hit.form["MessageStatus"] == status:
            await release.wait()
        return 200, b""

    return respond


async def test_a_slow_first_callback_holds_back_only_its_own_message(writer: Store) -> None:
    release = trio.Event()
    with trio.fail_after(20):
        async with open_sink(respond=hold("SMa", "sent", release)) as sink, running_sender(writer) as sender:
            await queue_statuses(writer, sink.url + "/cb", ["SMa", "SMb"])
            sender.wake()
            # SMb's three callbacks all go through while SMa's first one hangs on the same destination.
            await sink.wait_for(lambda s: statuses(s.delivered(), "SMb") == list(STATUSES))
            assert statuses(sink.arrived, "SMa") == ["sent"]  # its delivered/read wait their turn
            release.set()
            await sink.wait_for(lambda s: len(s.delivered()) == 6)
    assert statuses(sink.arrived, "SMa") == list(STATUSES)
    assert all(hit.signed_by(TOKEN) for hit in sink.hits)


async def test_a_failing_first_callback_is_retried_before_the_next_one_starts(writer: Store) -> None:
    refusals = Counter[str]()

    async def respond(hit: Hit) -> tuple[int, bytes]:
        if hit.form["MessageStatus"] == "sent" and refusals[hit.form["MessageSid"]] < 2:
            refusals[hit.form["MessageSid"]] += 1
            return 503, b"try later"
        return 200, b""

    with trio.fail_after(20):
        async with open_sink(respond=respond) as sink, running_sender(writer) as sender:
            await queue_statuses(writer, sink.url + "/cb", ["SMa", "SMb"])
            sender.wake()
            await sink.wait_for(lambda s: len(s.delivered()) == 6)
    for sid in ("SMa", "SMb"):
        # Answered in arrival order: nothing of the message overlapped its retried first callback.
        assert statuses(sink.arrived, sid) == ["sent", "sent", "sent", "delivered", "read"]
        assert [h.status for h in sink.hits if h.form["MessageSid"] == sid] == [503, 503, 200, 200, 200]
    assert sender.statistics().retried >= 2


async def test_many_messages_still_go_in_parallel_each_in_order(writer: Store) -> None:
    gate = trio.Event()
    open_per_message = Counter[str]()
    overlaps: list[str] = []
    sink_ref: list[Sink] = []

    async def respond(hit: Hit) -> tuple[int, bytes]:
        sid = hit.form["MessageSid"]
        open_per_message[sid] += 1
        if open_per_message[sid] > 1:
            overlaps.append(sid)
        if sink_ref[0].in_flight >= 4:
            gate.set()  # four messages' callbacks in flight at once on one destination
        await gate.wait()
        await trio.lowlevel.checkpoint()
        open_per_message[sid] -= 1
        return 200, b""

    sids = [f"SM{i:02d}" for i in range(30)]
    with trio.fail_after(30):
        async with open_sink(respond=respond) as sink, running_sender(writer, per_destination=4) as sender:
            sink_ref.append(sink)
            await queue_statuses(writer, sink.url + "/cb", sids)
            sender.wake()
            await sink.wait_for(lambda s: len(s.delivered()) == 90)
    assert sink.peak_in_flight == 4  # concurrent across messages, within the destination's cap
    assert overlaps == []
    assert all(statuses(sink.arrived, sid) == list(STATUSES) for sid in sids)


async def test_the_order_holds_across_a_restart_of_the_sender(writer: Store) -> None:
    async def refuse(_: Hit) -> tuple[int, bytes]:
        return 503, b"down"

    release = trio.Event()
    with trio.fail_after(20):
        async with open_sink(respond=refuse) as sink:
            async with running_sender(writer) as first:
                await queue_statuses(writer, sink.url + "/cb", ["SMa", "SMb"])
                first.wake()
                await sink.wait_for(lambda s: len(s.failed()) >= 3)
            before = len(sink.arrived)
            assert writer.count(callbacks.DB, b"") == 6  # nothing was answered: all still queued
            sink.respond = hold("SMa", "sent", release)
            async with running_sender(writer) as second:
                second.wake()
                await sink.wait_for(lambda s: statuses(s.delivered(), "SMb") == list(STATUSES))
                assert statuses(sink.arrived[before:], "SMa") == ["sent"]
                release.set()
                await sink.wait_for(lambda s: len(s.delivered()) == 6)
    assert statuses(sink.arrived[before:], "SMa") == list(STATUSES)
