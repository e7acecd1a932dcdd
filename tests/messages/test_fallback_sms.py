"""WhatsApp -> SMS: the fallback goes out through the Vonage SMS channel built from its shipped spec.

The WhatsApp number is On-Prem on the in-process simulator; the SMS number is a ``vonage-sms`` spec
number whose transport answers ``POST /sms/json`` as Vonage does (the form courier sends, the JSON
answer of Vonage's SMS API documentation), under MockClock.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import trio
import trio.testing

from actors.transport import Headers, Response
from dispatcher.core.channelspec.load import load_registry
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store
from dispatcher.core.twilio import render_message
from dispatcher.frontdoor.batch import BatchItem
from dispatcher.messages.fallback_plan import FallbackRequest
from dispatcher.service.fleet import number_info
from dispatcher.service.numbers import build_actor
from tests.helpers.configs import SMS, load, spec_table
from tests.helpers.fallback_world import ACCOUNT, CUSTOMER, ONE, SHIPPED, T0, open_world
from tests.helpers.messages import wait_for


class FakeVonage:
    """Vonage's SMS API: every send accepted with a message-id (``_source``: Vonage SMS API
    reference, ``POST /sms/json`` response: message-count, messages[].to/message-id/status)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        await trio.lowlevel.checkpoint()
        assert (method, target) == (b"POST", b"/sms/json")
        form = dict(parse_qsl(body.decode()))
        self.sent.append(form)
        answer = {
            "message-count": "1",
            "messages": [
                {
                    "to": form["to"],
                    "message-id": f"0A00000{len(self.sent):09d}",
                    "status": "0",
                    "remaining-balance": "3.14159265",
                    "message-price": "0.03330000",
                    "network": "12345",
                }
            ],
        }
        return Response(200, [(b"content-type", b"application/json")], json.dumps(answer).encode())

    async def aclose(self) -> None:
        pass


async def test_a_whatsapp_message_not_delivered_in_time_goes_as_an_sms(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=T0)
    vonage = FakeVonage()
    spec = load_registry().get("vonage-sms")
    assert spec is not None
    sms_config = load(spec_table()).numbers[0]
    sms_actor = build_actor(sms_config, vonage, store=writer, wall=wall, spec=spec, status_url=None)
    world = await open_world(nursery, writer, wall=wall, more=[(number_info(sms_config), sms_actor)])
    primary = await world.create(
        FallbackRequest(from_=SMS, after="120"),
        body=None,
        content_sid=SHIPPED,
        content_variables='{"1":"Ada","2":"#42"}',
    )
    await wait_for(lambda: world.record(primary.sid).status == "sent")  # on WhatsApp, never delivered
    await wait_for(lambda: len(vonage.sent) == 1)
    fallback = world.record(world.record(primary.sid).fallback_sid or "")
    sms = vonage.sent[0]
    assert (sms["from"], sms["to"]) == (SMS.lstrip("+"), CUSTOMER.lstrip("+"))
    assert sms["text"] == "Hi Ada, your order #42 has shipped."  # the template's text with its values
    assert sms["client-ref"] == fallback.sid and fallback.primary_sid == primary.sid
    await wait_for(lambda: world.record(fallback.sid).status == "sent")
    assert world.record(fallback.sid).channel_id == "0A00000000000001"
    # Its status callback says the SMS channel carried it, and for which message.
    [callback] = world.callbacks_of(fallback.sid)
    assert (callback["ChannelPrefix"], callback["From"], callback["To"]) == ("sms", SMS, CUSTOMER)
    assert callback["PrimarySid"] == primary.sid and callback["MessageStatus"] == "sent"
    assert render_message(world.record(fallback.sid)).from_ == SMS  # no whatsapp: prefix
    assert [r.type for r in world.sim.received(ONE)] == ["template"]  # WhatsApp got the template once
    # The WhatsApp message arrives after all: recorded, and no second SMS.
    await world.status(primary.sid, "delivered")
    await trio.sleep(300)
    assert world.record(primary.sid).late_status == "delivered" and len(vonage.sent) == 1


async def test_not_on_whatsapp_goes_as_an_sms_at_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=T0)
    vonage = FakeVonage()
    spec = load_registry().get("vonage-sms")
    assert spec is not None
    sms_config = load(spec_table()).numbers[0]
    sms_actor = build_actor(sms_config, vonage, store=writer, wall=wall, spec=spec, status_url=None)
    world = await open_world(nursery, writer, wall=wall, more=[(number_info(sms_config), sms_actor)])
    world.transports[ONE].refused.add(CUSTOMER)  # On-Prem 1013 -> 63003
    start = trio.current_time()
    primary = await world.create(FallbackRequest(from_=SMS, error_codes="63003,63024"))
    await wait_for(lambda: len(vonage.sent) == 1)
    assert trio.current_time() - start < 1.05
    assert vonage.sent[0]["text"] == "Your code is 4711"
    assert world.record(primary.sid).error_code == 63003 and world.sim.received(ONE) == []


async def test_only_a_whatsapp_sender_turns_a_template_s_text_into_the_template(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    """Twilio's classic matching is WhatsApp's: the same text from an SMS number stays text (a
    template primary's SMS fallback is its text), in a single create and in a batch."""
    wall = TrioWallClock(start=T0)
    spec = load_registry().get("vonage-sms")
    assert spec is not None
    sms_config = load(spec_table()).numbers[0]
    sms_actor = build_actor(sms_config, FakeVonage(), store=writer, wall=wall, spec=spec, status_url=None)
    world = await open_world(nursery, writer, wall=wall, more=[(number_info(sms_config), sms_actor)])
    text = "Hi Ada, your order #42 has shipped."
    assert (await world.create(body=text)).template is not None  # from the WhatsApp number
    assert (await world.create(from_=SMS, body=text)).template is None
    [plain] = world.messaging.rules.validate_plain(ACCOUNT, [BatchItem(to=CUSTOMER, from_=SMS, body=text)])
    assert isinstance(plain, MessageRecord) and plain.template is None
