"""Fallback messages under MockClock: each condition, the link, the late primary, the window template.

Gateway -> LMDB -> actor -> in-process simulator; statuses arrive through the Inbox as
webhooks do. ``TWO`` stands in as the fallback sender (an SMS number in production).
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from dispatcher.core import fallbacks
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import Store
from dispatcher.core.twilio import TwilioError, render_message
from dispatcher.frontdoor.batch import BatchItem, accept_batch
from dispatcher.messages import idempotency
from dispatcher.messages.fallback import idempotency_key
from dispatcher.messages.fallback_plan import FallbackRequest
from dispatcher.messages.rules import SendRequest
from tests.helpers.fallback_world import (
    ACCOUNT,
    CALLBACK,
    CUSTOMER,
    ONE,
    SERVICE,
    SHIPPED,
    TWO,
    WINDOW,
    FallbackWorld,
    open_world,
    service,
)
from tests.helpers.messages import wait_for


async def sent(world: FallbackWorld, sid: str) -> None:
    await wait_for(lambda: world.record(sid).channel_id is not None)


async def linked(world: FallbackWorld, sid: str) -> str:
    await wait_for(lambda: world.record(sid).fallback_sid is not None)
    fallback_sid = world.record(sid).fallback_sid
    assert fallback_sid is not None
    return fallback_sid


# -- the error-code trigger --------------------------------------------------------------------


async def test_a_listed_error_in_a_status_webhook_sends_the_fallback_at_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    primary = await world.create(FallbackRequest(from_=TWO, error_codes="63003, 63024"))
    assert primary.fallback is not None and primary.fallback.error_codes == [63003, 63024]
    await sent(world, primary.sid)
    failed_at = trio.current_time()
    await world.status(primary.sid, "failed", 63003)
    fallback_sid = await linked(world, primary.sid)
    assert trio.current_time() - failed_at < 0.1  # rung by the webhook, not found by the poll
    await wait_for(lambda: world.texts(TWO) == ["Your code is 4711"])
    first, second = world.record(primary.sid), world.record(fallback_sid)
    assert (first.status, first.error_code) == ("failed", 63003)
    assert (second.from_number, second.to_number, second.primary_sid) == (TWO, CUSTOMER, primary.sid)
    assert second.fallback is None and second.status == "sent"
    # Both sids in the API resources (our extension fields), and in the status callbacks.
    assert render_message(first).fallback_sid == fallback_sid
    assert render_message(second).primary_sid == primary.sid
    [callback] = world.callbacks_of(fallback_sid)
    assert callback["PrimarySid"] == primary.sid and callback["From"].endswith(TWO)
    assert callback["MessageStatus"] == "sent"
    assert world.fallbacks.pending() == 0 and world.fallbacks.sent == 1


async def test_a_send_the_channel_refuses_with_a_listed_code_falls_back_within_the_poll(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    world.transports[ONE].refused.add(CUSTOMER)  # On-Prem 1013: not on WhatsApp (63003)
    start = trio.current_time()
    primary = await world.create(FallbackRequest(from_=TWO, error_codes="63003"))
    fallback_sid = await linked(world, primary.sid)
    assert trio.current_time() - start < 1.05  # the actor's failure is found by the 1 s poll
    assert world.record(primary.sid).error_code == 63003
    await wait_for(lambda: world.record(fallback_sid).status == "sent")
    assert world.texts(ONE) == [] and world.texts(TWO) == ["Your code is 4711"]


async def test_an_error_not_listed_sends_no_fallback(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    primary = await world.create(FallbackRequest(from_=TWO, error_codes="63003"))
    await sent(world, primary.sid)
    await world.status(primary.sid, "undelivered", 63032)
    await trio.sleep(10)
    assert world.record(primary.sid).fallback_sid is None and world.texts(TWO) == []
    assert world.fallbacks.pending() == 0 and world.messages() == 1


# -- the timers ----------------------------------------------------------------------------


async def test_no_delivered_within_after_sends_the_fallback_and_a_late_delivery_sends_nothing_more(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    start = trio.current_time()
    primary = await world.create(FallbackRequest(from_=TWO, after="60"))
    await sent(world, primary.sid)  # sent, never delivered
    fallback_sid = await linked(world, primary.sid)
    assert 60 <= trio.current_time() - start < 60.1
    assert world.record(primary.sid).status == "sent"  # on its way: it keeps its course
    await wait_for(lambda: world.record(fallback_sid).status == "sent")
    # The primary arrives after all: recorded, counted, and never a third message.
    await world.status(primary.sid, "delivered")
    await world.status(primary.sid, "read")
    await trio.sleep(120)
    late = world.record(primary.sid)
    assert (late.status, late.fallback_sid, late.late_status) == ("read", fallback_sid, "delivered")
    assert world.fallbacks.late == 1  # delivered then read: one late arrival, counted once
    assert world.messages() == 2 and len(world.texts(ONE)) == len(world.texts(TWO)) == 1
    assert world.fallbacks.pending() == 0
    delivered = [c for c in world.callbacks_of(primary.sid) if c["MessageStatus"] == "delivered"]
    assert delivered[0]["FallbackSid"] == fallback_sid


async def test_a_delivery_in_time_stops_the_timer(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    primary = await world.create(FallbackRequest(from_=TWO, after="60"))
    await sent(world, primary.sid)
    assert world.fallbacks.pending() == 1
    await world.status(primary.sid, "delivered")
    assert world.fallbacks.pending() == 0  # removed in the status's own write
    await trio.sleep(120)
    assert world.record(primary.sid).fallback_sid is None and world.texts(TWO) == []


async def test_no_sent_within_after_withdraws_the_waiting_primary(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, running=(TWO,))  # ONE's actor is down: nothing leaves
    primary = await world.create(FallbackRequest(from_=TWO, after="30", awaiting="sent"))
    fallback_sid = await linked(world, primary.sid)
    withdrawn = world.record(primary.sid)
    assert (withdrawn.status, withdrawn.error_code, withdrawn.outbox_seq) == ("failed", 30036, None)
    assert writer.count(b"outbox", ONE.encode()) == 0  # the customer gets the fallback alone
    await wait_for(lambda: world.record(fallback_sid).status == "sent")
    assert [c["MessageStatus"] for c in world.callbacks_of(primary.sid)] == ["failed"]


async def test_a_primary_sending_at_the_deadline_keeps_its_course(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    world.transports[ONE].stalled = stall = trio.Event()  # the send is on the wire at the deadline
    primary = await world.create(FallbackRequest(from_=TWO, after="30", awaiting="sent"))
    fallback_sid = await linked(world, primary.sid)
    assert world.record(primary.sid).status == "queued"  # held by nobody: its send had started
    stall.set()
    await sent(world, primary.sid)
    assert world.record(primary.sid).status == "sent"  # late, recorded
    await wait_for(lambda: world.record(fallback_sid).status == "sent")
    assert len(world.texts(ONE)) == len(world.texts(TWO)) == 1


async def test_sent_in_time_satisfies_an_await_of_sent(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    primary = await world.create(FallbackRequest(from_=TWO, after="30", awaiting="sent"))
    await sent(world, primary.sid)
    assert world.fallbacks.pending() == 0  # mark_sent removed the timer
    await trio.sleep(60)
    assert world.record(primary.sid).fallback_sid is None and world.texts(TWO) == []


# -- what the fallback says ----------------------------------------------------------------------


def window_info(number: str) -> NumberInfo:
    return NumberInfo(number, ACCOUNT, "s", enforce_window=True, window_template=WINDOW)


async def test_a_message_refused_for_the_window_goes_as_the_number_template(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, info=window_info)
    primary = await world.create()
    assert (primary.status, primary.error_code) == ("failed", 63016)  # accepted, not sent as it was
    fallback_sid = await linked(world, primary.sid)
    fallback = world.record(fallback_sid)
    assert fallback.from_number == ONE and fallback.template is not None
    assert fallback.template.name == "message_waiting" and fallback.template.params == ["Your code is 4711"]
    assert fallback.body == "We have a message for you: Your code is 4711"
    await wait_for(lambda: len(world.sim.received(ONE)) == 1)
    assert world.sim.received(ONE)[0].type == "template"
    assert [c["MessageStatus"] for c in world.callbacks_of(primary.sid)] == ["failed"]


async def test_a_batch_item_refused_for_the_window_goes_as_the_number_template(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, info=window_info)
    items = [BatchItem(to=CUSTOMER, from_=ONE, body="Your code is 4711")]
    await accept_batch(world.messaging.rules, world.gateway, ACCOUNT, items)
    await wait_for(lambda: len(world.sim.received(ONE)) == 1)
    assert world.sim.received(ONE)[0].type == "template" and world.messages() == 2


async def test_a_template_falls_back_as_its_text_with_its_values_or_the_body_given(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    world.transports[ONE].refused.add(CUSTOMER)
    variables = '{"1":"Ada","2":"#42"}'
    rendered = await world.create(
        FallbackRequest(from_=TWO, error_codes="63003"),
        body=None,
        content_sid=SHIPPED,
        content_variables=variables,
    )
    given = await world.create(
        FallbackRequest(from_=TWO, error_codes="63003", body="Order #42 shipped."),
        body=None,
        content_sid=SHIPPED,
        content_variables=variables,
    )
    await wait_for(lambda: len(world.texts(TWO)) == 2)
    fallbacks_made = [world.record(world.record(p.sid).fallback_sid or "") for p in (rendered, given)]
    assert [f.body for f in fallbacks_made] == ["Hi Ada, your order #42 has shipped.", "Order #42 shipped."]
    # TWO is a WhatsApp number here, so the text that is an instance of a template goes as it
    # (Twilio's matching); an SMS number sends it as text.
    assert "Order #42 shipped." in world.texts(TWO)  # both fell due at once: either goes first


async def test_a_messaging_service_names_the_fallback_and_a_parameter_overrides_it(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, services=(service(error_codes=[63003], after=300.0),))
    world.transports[ONE].refused.add(CUSTOMER)
    by_service = await world.create(from_=None, messaging_service_sid=SERVICE)
    assert by_service.fallback is not None and by_service.fallback.from_number == TWO
    own_body = await world.create(
        FallbackRequest(body="Short text"), from_=None, messaging_service_sid=SERVICE
    )
    await wait_for(lambda: len(world.texts(TWO)) == 2)
    assert sorted(map(str, world.texts(TWO))) == ["Short text", "Your code is 4711"]
    assert world.record(own_body.sid).fallback_sid is not None
    assert world.fallbacks.pending() == 0  # the error trigger removed the 300 s timers too


async def test_a_fallback_the_rules_refuse_is_recorded_once_and_never_retried(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    world.transports[ONE].refused.add(CUSTOMER)
    primary = await world.create(FallbackRequest(from_=TWO, error_codes="63003"))
    # The fallback's sender leaves the directory before it fires: the create refuses it (63007).
    world.messaging.directory.reload([NumberInfo(ONE, ACCOUNT, "s")])
    await wait_for(lambda: world.record(primary.sid).fallback_error is not None)
    assert (world.record(primary.sid).fallback_error or "").startswith("63007")
    await trio.sleep(120)
    assert world.fallbacks.refused == 1 and world.fallbacks.pending() == 0 and world.messages() == 1


async def test_a_drained_fallback_sender_is_tried_again_later(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    world.transports[ONE].refused.add(CUSTOMER)
    world.messaging.draining.add(TWO)
    primary = await world.create(FallbackRequest(from_=TWO, error_codes="63003"))
    await wait_for(lambda: world.record(primary.sid).status == "failed")
    await trio.sleep(5)
    assert world.fallbacks.pending() == 1 and world.record(primary.sid).fallback_sid is None
    world.messaging.draining.discard(TWO)
    fallback_sid = await linked(world, primary.sid)
    await wait_for(lambda: world.record(fallback_sid).status == "sent")


# -- idempotent creation ------------------------------------------------------------------------


async def test_a_fire_repeated_after_the_fallback_was_committed_replays_it(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    """A crash after the fallback's commit and before the link: the entry fires again, the
    idempotency key keyed on the primary's sid returns the fallback already made."""
    world = await open_world(nursery, writer, running=(TWO,), fire=False)  # the test plays the task
    primary = await world.create(FallbackRequest(from_=TWO, after="30", awaiting="sent"))
    request = SendRequest(
        to=CUSTOMER, from_=TWO, body="Your code is 4711", status_callback=CALLBACK, primary_sid=primary.sid
    )
    made = await world.gateway.create(ACCOUNT, request, idempotency_key=idempotency_key(primary.sid))
    await trio.sleep(31)
    assert world.fallbacks.pending() == 1
    await world.fallbacks.fire_due()
    assert world.record(primary.sid).fallback_sid == made.sid
    assert world.messages() == 2 and world.fallbacks.pending() == 0
    await wait_for(lambda: world.texts(TWO) == ["Your code is 4711"])


# -- bad parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fallback", "kw", "code", "says"),
    [
        (FallbackRequest(from_="+15550000009", error_codes="63003"), {}, 63007, "could not find a Channel"),
        (FallbackRequest(from_="not a number", error_codes="63003"), {}, 21212, "FallbackFrom"),
        (FallbackRequest(from_=ONE, error_codes="63003"), {}, 20001, "own sender"),
        (FallbackRequest(from_=TWO), {}, 20001, "FallbackErrorCodes or FallbackAfter"),
        (FallbackRequest(error_codes="63003"), {}, 20001, "needs FallbackFrom"),
        (FallbackRequest(body="text"), {}, 20001, "needs FallbackFrom"),
        (FallbackRequest(from_=TWO, error_codes="63003;x"), {}, 20001, "FallbackErrorCodes"),
        (FallbackRequest(from_=TWO, error_codes="0"), {}, 20001, "not an error code"),
        (FallbackRequest(from_=TWO, error_codes=",".join(["1"] * 33)), {}, 20001, "up to 32"),
        (FallbackRequest(from_=TWO, after="0"), {}, 20001, "FallbackAfter"),
        (FallbackRequest(from_=TWO, after="nan"), {}, 20001, "FallbackAfter"),
        (FallbackRequest(from_=TWO, after="86401"), {}, 20001, "at most 86400"),
        (FallbackRequest(from_=TWO, after="soon"), {}, 20001, "FallbackAfter"),
        (FallbackRequest(from_=TWO, after="60", awaiting="read"), {}, 20001, "'delivered' or 'sent'"),
        (FallbackRequest(from_=TWO, error_codes="63003", awaiting="sent"), {}, 20001, "needs FallbackAfter"),
        (FallbackRequest(from_=TWO, error_codes="63003", body="   "), {}, 20001, "blank"),
        (FallbackRequest(from_=TWO, error_codes="63003", body="x" * 1601), {}, 21617, "FallbackBody"),
    ],
)
async def test_bad_fallback_parameters_are_refused_and_nothing_is_stored(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    fallback: FallbackRequest,
    kw: dict[str, object],
    code: int,
    says: str,
) -> None:
    world = await open_world(nursery, writer)
    with pytest.raises(TwilioError) as info:
        await world.create(fallback, **kw)
    assert info.value.code == code and says in info.value.message, info.value.message
    assert world.messages() == 0 and world.fallbacks.pending() == 0


async def test_a_fallback_message_never_has_a_fallback_of_its_own(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, info=window_info)
    fallback = await world.create(
        primary_sid="SM" + "0" * 32,
        from_=TWO,
        body=None,
        content_sid=SHIPPED,
        content_variables='{"1":"A","2":"B"}',
    )
    assert fallback.fallback is None and fallback.status == "queued"
    assert fallbacks.pending(writer) == 0


def test_an_idempotency_key_stored_before_fallback_existed_still_matches_its_retry() -> None:
    """The digest of a create without fallback parameters is the one main computed before them."""
    request = SendRequest(
        to="whatsapp:+15551234567",
        from_="whatsapp:+15550000001",
        body="hi",
        media_urls=("https://x.io/a.jpg",),
    )
    digest = idempotency.fingerprint(request.identity())
    assert digest.hex() == "b927033b860b38a9e4a674afdb84d6b2300df21bca6ca705d0666be5d803a7c8"
    with_fallback = attrs.evolve(request, fallback=FallbackRequest(from_=TWO, after="60"))
    assert idempotency.fingerprint(with_fallback.identity()) != digest


async def test_a_fallback_that_crashes_is_tried_again_and_the_task_lives_on(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await open_world(nursery, writer)
    world.transports[ONE].refused.add(CUSTOMER)
    create = world.gateway.create
    calls: list[float] = []

    async def broken_once(*args: object, **kwargs: object) -> object:
        calls.append(trio.current_time())
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return await create(*args, **kwargs)  # type: ignore[arg-type]

    first = await world.create(FallbackRequest(from_=TWO, error_codes="63003"))
    monkeypatch.setattr(world.gateway, "create", broken_once)  # the fallback task's creates from now
    fallback_sid = await linked(world, first.sid)
    assert len(calls) == 2 and calls[1] - calls[0] == pytest.approx(30, abs=1.1)  # RETRY_DELAY
    await wait_for(lambda: world.record(fallback_sid).status == "sent")


async def test_63016_listed_sends_a_message_refused_for_the_window_from_the_fallback_sender(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    def closed(number: str) -> NumberInfo:
        return NumberInfo(number, ACCOUNT, "s", enforce_window=number == ONE)

    world = await open_world(nursery, writer, info=closed)
    with pytest.raises(TwilioError) as info:  # no fallback for it: refused as before
        await world.create(FallbackRequest(from_=TWO, error_codes="63003"))
    assert info.value.code == 63016 and world.messages() == 0
    primary = await world.create(FallbackRequest(from_=TWO, error_codes="63016"))
    assert (primary.status, primary.error_code) == ("failed", 63016)
    fallback_sid = await linked(world, primary.sid)
    await wait_for(lambda: world.record(fallback_sid).status == "sent")
    assert world.texts(TWO) == ["Your code is 4711"] and world.texts(ONE) == []
