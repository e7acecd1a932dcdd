"""CallbackSender under MockClock: backoff, give-up, isolation, refusals, TwiML, pinning (MockTransport)."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from dispatcher.core.callbacks import CallbackEntry
from dispatcher.core.store import Store
from dispatcher.webhooks.callback_sender import MAX_ANSWER
from dispatcher.webhooks.twiml import Reply
from tests.helpers.callback_sender import TOKEN, Handler, Harness, entry


def answer(status: int, body: bytes = b"") -> Handler:
    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    return handler


@pytest.fixture
def clock(autojump_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    return autojump_clock


async def run(h: Harness, nursery: trio.Nursery) -> None:
    await nursery.start(h.sender.run)


async def test_delivers_signed_to_the_pinned_address(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    h = Harness(writer, answer(204))
    await run(h, nursery)
    await h.queue(entry("https://a.example:8443/cb?x=1"))
    await trio.sleep(1)
    [(_, request)] = h.requests
    assert request.url.host == "93.184.216.34" and request.url.port == 8443  # the address we checked
    assert request.headers["host"] == "a.example:8443"
    assert request.extensions["sni_hostname"] == "a.example"
    params = dict(parse_qsl(request.content.decode()))
    signature = request.headers["x-twilio-signature"]
    assert RequestValidator(TOKEN).validate("https://a.example:8443/cb?x=1", params, signature)
    assert h.pending() == 0 and h.sender.statistics().delivered == 1


async def test_backs_off_exponentially_then_gives_up_and_logs(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    h = Harness(writer, answer(503), give_up_after=60.0)
    await run(h, nursery)
    with capture_logs() as logs:
        await h.queue(entry("https://a.example/cb"))
        await trio.sleep(120)
    times = [t for t, _ in h.requests]
    assert len(times) >= 8
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for i, gap in enumerate(gaps):
        ceiling = min(8.0, 2.0**i)
        assert ceiling * 0.5 - 1e-6 <= gap <= ceiling + 1e-6, gaps
    assert times[-1] - times[0] <= 60.0 + 8.0
    assert h.pending() == 0
    gave_up = [e for e in logs if e["event"] == "callback.gave_up"]
    assert len(gave_up) == 1 and gave_up[0]["sid"] == "SM1"
    assert h.sender.statistics().gave_up == 1


@pytest.mark.parametrize(
    ("status", "retried"), [(400, False), (404, False), (410, False), (429, True), (408, True), (500, True)]
)
async def test_4xx_is_final_but_429_408_and_5xx_are_retried(
    writer: Store, nursery: trio.Nursery, clock: object, status: int, retried: bool
) -> None:
    h = Harness(writer, answer(status))
    await run(h, nursery)
    await h.queue(entry("https://a.example/cb"))
    await trio.sleep(10)
    assert (len(h.requests) > 1) is retried
    assert (h.pending() == 1) is retried


async def test_connection_errors_and_unresolvable_names_are_retried(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    calls = 0

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    h = Harness(writer, flaky)
    await run(h, nursery)
    await h.queue(entry("https://a.example/cb"), entry("https://gone.example/cb", sid="SM2"))
    await trio.sleep(30)
    assert calls == 3 and h.sender.statistics().delivered == 1
    assert h.pending() == 1  # gone.example never resolved: still queued, not dropped


async def test_private_targets_are_refused_and_dropped(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    h = Harness(writer, answer(200))
    await run(h, nursery)
    with capture_logs() as logs:
        await h.queue(entry("https://inside.example/cb"), entry("http://169.254.169.254/latest", sid="SM2"))
        await trio.sleep(1)
    assert h.requests == [] and h.pending() == 0
    assert sorted(e["sid"] for e in logs if e["event"] == "callback.refused") == ["SM1", "SM2"]


async def test_a_hanging_destination_never_holds_up_another(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "a.example":
            await trio.sleep_forever()
        return httpx.Response(200)

    h = Harness(writer, handler, per_destination=2, concurrency=4, lane_size=5, timeout=1e6)
    await run(h, nursery)
    await h.queue(*[entry("https://a.example/cb", sid=f"A{i}") for i in range(50)])
    await h.queue(*[entry("https://b.example/cb", sid=f"B{i}") for i in range(20)])
    await trio.sleep(5)
    assert h.hosts().count("a.example") == 2  # its two slots, hanging
    assert h.hosts().count("b.example") == 20
    stats = h.sender.statistics()
    assert stats.delivered == 20 and stats.queued_in_memory <= 5  # the dead lane's memory is bounded
    assert h.pending() == 50


async def test_twiml_replies_are_handed_over_and_bad_twiml_is_logged(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "good" in str(request.url):
            return httpx.Response(200, content=b"<Response><Message>Thanks</Message></Response>")
        return httpx.Response(200, content=b"<Response><Message>unclosed")

    h = Harness(writer, handler)
    await run(h, nursery)
    with capture_logs() as logs:
        await h.queue(
            entry("https://a.example/good", kind="inbound"), entry("https://a.example/bad", kind="inbound")
        )
        await trio.sleep(1)
    assert [r for _, r in h.replies] == [[Reply("Thanks")]]
    assert [e["event"] for e in logs if e["event"].startswith("callback.twiml")] == ["callback.twiml_invalid"]
    assert h.pending() == 0


async def test_a_new_sender_resumes_the_queue_from_lmdb(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    first = Harness(writer, answer(503))
    async with trio.open_nursery() as inner:
        await run(first, inner)
        await first.queue(*[entry("https://a.example/cb", sid=f"S{i}") for i in range(3)])
        await trio.sleep(2)
        inner.cancel_scope.cancel()
    assert first.pending() == 3
    second = Harness(writer, answer(200))
    await run(second, nursery)
    await trio.sleep(1)
    sids = sorted(dict(parse_qsl(r.content.decode()))["MessageSid"] for _, r in second.requests)
    assert sids == ["S0", "S1", "S2"] and second.pending() == 0


async def test_a_trickling_endpoint_is_cut_off_at_the_timeout_and_retried(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        while True:
            await trio.sleep(1)  # each read is quick; the whole answer never ends
            yield b" "

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=trickle())

    h = Harness(writer, handler, timeout=5.0, backoff_initial=100.0, backoff_max=100.0)
    await run(h, nursery)
    await h.queue(entry("https://a.example/cb"))
    await trio.sleep(4)
    assert h.sender.statistics().retried == 0  # still reading: every read takes only 1 s
    await trio.sleep(2)
    assert h.sender.statistics().retried == 1  # cut off at the 5 s deadline: a failed attempt
    assert len(h.requests) == 1 and h.pending() == 1 and h.sender.statistics().delivered == 0


async def test_an_oversized_answer_is_read_only_up_to_the_cap(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        yield b"<Response><Message>"
        while True:
            produced += 1 << 16
            yield b"x" * (1 << 16)
            await trio.lowlevel.checkpoint()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    h = Harness(writer, handler)
    await run(h, nursery)
    with capture_logs() as logs:
        await h.queue(entry("https://a.example/cb", kind="inbound"))
        await trio.sleep(1)
    assert produced <= 4 * MAX_ANSWER
    assert [e["event"] for e in logs if e["event"].startswith("callback.twiml")] == ["callback.twiml_invalid"]
    assert h.replies == [] and h.pending() == 0


async def test_a_message_s_next_callback_waits_for_the_previous_through_its_backoff(
    writer: Store, nursery: trio.Nursery, clock: object
) -> None:
    answered: list[tuple[float, str, str]] = []
    refusals = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal refusals
        form = dict(parse_qsl(request.content.decode()))
        if form["MessageSid"] == "SMa" and form["MessageStatus"] == "sent" and refusals < 3:
            refusals += 1
            return httpx.Response(503)
        await trio.sleep(5 if form["MessageStatus"] == "sent" else 1)  # a slow first answer
        answered.append((trio.current_time(), form["MessageSid"], form["MessageStatus"]))
        return httpx.Response(200)

    def status_entry(sid: str, status: str) -> CallbackEntry:
        return msgspec.structs.replace(
            entry("https://a.example/cb", sid=sid), params=[("MessageSid", sid), ("MessageStatus", status)]
        )

    h = Harness(writer, handler, per_destination=4)
    await run(h, nursery)
    for status in ("sent", "delivered", "read"):
        await h.queue(status_entry("SMa", status), status_entry("SMb", status))
    await trio.sleep(60)
    assert h.pending() == 0
    started = {
        (f["MessageSid"], f["MessageStatus"]): t
        for t, r in h.requests
        for f in [dict(parse_qsl(r.content.decode()))]
    }  # the last start of each (SMa's sent: its successful try)
    done = {(sid, status): t for t, sid, status in answered}
    for sid in ("SMa", "SMb"):
        assert started[sid, "delivered"] >= done[sid, "sent"]
        assert started[sid, "read"] >= done[sid, "delivered"]
    assert [s for _, sid, s in answered if sid == "SMa"] == ["sent", "delivered", "read"]
    assert refusals == 3


@settings(max_examples=15, deadline=None)
@given(
    answers=st.lists(st.sampled_from([200, 200, 204, 503, 500, 429, 404]), min_size=1, max_size=30),
    delays=st.lists(st.sampled_from([0.0, 0.5, 3.0]), min_size=1, max_size=7),
    messages=st.integers(min_value=1, max_value=6),
    per_destination=st.integers(min_value=1, max_value=4),
)
def test_whatever_the_answers_one_message_never_has_two_callbacks_in_flight(
    answers: list[int], delays: list[float], messages: int, per_destination: int
) -> None:
    """Property: random answers and latencies; per message, each callback starts only once the one
    before was answered (2xx or a final 4xx); what is delivered is in status order."""
    sids = [f"SM{i}" for i in range(messages)]
    in_flight: dict[str, int] = {}
    overlaps: list[str] = []
    delivered: dict[str, list[str]] = {sid: [] for sid in sids}
    calls = itertools.count()

    async def handler(request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        sid, n = form["MessageSid"], next(calls)
        in_flight[sid] = in_flight.get(sid, 0) + 1
        if in_flight[sid] > 1:
            overlaps.append(sid)
        await trio.sleep(delays[n % len(delays)])
        in_flight[sid] -= 1
        status = answers[n % len(answers)]
        if 200 <= status < 300:
            delivered[sid].append(form["MessageStatus"])
        return httpx.Response(status)

    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, map_size=16 << 20, commit_in_thread=False)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(store.run_writer)
                    h = Harness(store, handler, per_destination=per_destination)
                    await nursery.start(h.sender.run)
                    for status in ("sent", "delivered", "read"):
                        for sid in sids:
                            item = entry("https://a.example/cb", sid=sid)
                            await h.queue(
                                msgspec.structs.replace(
                                    item, params=[("MessageSid", sid), ("MessageStatus", status)]
                                )
                            )
                    await trio.sleep(300)
                    nursery.cancel_scope.cancel()
            finally:
                store.close_env()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert overlaps == []
    order = ["sent", "delivered", "read"]
    for got in delivered.values():
        assert got == sorted(got, key=order.index) and len(set(got)) == len(got)
