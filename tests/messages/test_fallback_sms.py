"""WhatsApp -> SMS: the fallback goes out through the Vonage SMS channel built from its shipped spec.

(The SMS number's directory entry is built by hand with the window off: an SMS sender has no 24 h
window, which the directory learns from the spec's address prefix.)

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
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import Store
from dispatcher.messages.fallback_plan import FallbackRequest
from dispatcher.service.numbers import build_actor
from tests.helpers.configs import SMS, load, spec_table
from tests.helpers.fallback_world import ACCOUNT, CUSTOMER, ONE, T0, open_world
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
    world = await open_world(nursery, writer, wall=wall, more=[(NumberInfo(SMS, ACCOUNT, ""), sms_actor)])
    primary = await world.create(FallbackRequest(from_=SMS, after="120"), body="Your order #42 has shipped.")
    await wait_for(lambda: world.record(primary.sid).status == "sent")  # on WhatsApp, never delivered
    await wait_for(lambda: len(vonage.sent) == 1)
    fallback = world.record(world.record(primary.sid).fallback_sid or "")
    sms = vonage.sent[0]
    assert (sms["from"], sms["to"]) == (SMS.lstrip("+"), CUSTOMER.lstrip("+"))
    assert sms["text"] == "Your order #42 has shipped."
    assert sms["client-ref"] == fallback.sid and fallback.primary_sid == primary.sid
    await wait_for(lambda: world.record(fallback.sid).status == "sent")
    assert world.record(fallback.sid).channel_id == "0A00000000000001"
    # Its status callback names the message it stands in for, and its sender.
    [callback] = world.callbacks_of(fallback.sid)
    assert callback["PrimarySid"] == primary.sid and callback["MessageStatus"] == "sent"
    assert callback["From"].endswith(SMS)
    assert len(world.sim.received(ONE)) == 1  # WhatsApp got it once
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
    world = await open_world(nursery, writer, wall=wall, more=[(NumberInfo(SMS, ACCOUNT, ""), sms_actor)])
    world.transports[ONE].refused.add(CUSTOMER)  # On-Prem 1013 -> 63003
    start = trio.current_time()
    primary = await world.create(FallbackRequest(from_=SMS, error_codes="63003,63024"))
    await wait_for(lambda: len(vonage.sent) == 1)
    assert trio.current_time() - start < 1.05
    assert vonage.sent[0]["text"] == "Your code is 4711"
    assert world.record(primary.sid).error_code == 63003 and world.sim.received(ONE) == []
