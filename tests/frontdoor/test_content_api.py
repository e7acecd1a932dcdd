"""Twilio's Content API against the daemon, with the real twilio SDK's ``client.content.v1``: authoring,
submitting to WhatsApp (the simulator plays Meta's review), and sending the approved template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList
from twilio.rest.content.v1.content.approval_create import ApprovalCreateInstance

from dispatcher.service.daemon import Running
from tests.helpers.daemon import ACCOUNT, CLOUD, PNID, TOKEN, messages_path, running_daemon
from tests.helpers.templates import WABA, corpus, sid_of, until, waba_config


def sdk(daemon: Running) -> Client:
    client = Client(ACCOUNT, TOKEN)
    client.content.base_url = daemon.url
    client.api.base_url = daemon.url
    return client


CALL_TO_ACTION = {
    "friendly_name": "order_update",
    "language": "en",
    "variables": {"1": "Ana", "2": "8601"},
    "types": {
        "twilio/call-to-action": {
            "body": "Hi {{1}}, your order {{2}} has shipped.",
            "actions": [
                {"type": "URL", "title": "Track it", "url": "https://shop.example/t/{{2}}"},
                {"type": "PHONE_NUMBER", "title": "Call us", "phone": "+15550051310"},
            ],
        },
        "twilio/text": {"body": "Hi {{1}}, your order {{2}} has shipped."},
    },
}
QUICK_REPLY = {
    "friendly_name": "survey",
    "language": "en_US",
    "variables": {"1": "Ana"},
    "types": {
        "twilio/quick-reply": {
            "body": "Hi {{1}}, did it arrive?",
            "actions": [{"title": "Yes", "id": "arrived_yes"}, {"title": "No", "id": "arrived_no"}],
        }
    },
}
AUTHENTICATION = {
    "friendly_name": "otp",
    "language": "en",
    "types": {
        "whatsapp/authentication": {
            "add_security_recommendation": True,
            "code_expiration_minutes": 5,
            "actions": [{"type": "COPY_CODE", "copy_code_text": "Copy code"}],
        }
    },
}


async def test_the_twilio_sdk_authors_submits_and_sends_content(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            sim.templates.seed(WABA, corpus("pywa_seasonal_promotion"))  # made at Meta, synced here
            await daemon.template_sync.sync(WABA)

            def author() -> tuple[list[str], str, Any, Any]:
                content = sdk(daemon).content.v1
                sids = [
                    content.contents.create(ContentList.ContentCreateRequest(doc)).sid
                    for doc in (CALL_TO_ACTION, QUICK_REPLY, AUTHENTICATION)
                ]
                fetched = content.contents(sids[0]).fetch()
                approvals = []
                for sid, name, category in zip(
                    sids,
                    ("order_update", "survey", "otp"),
                    ("UTILITY", "MARKETING", "AUTHENTICATION"),
                    strict=True,
                ):
                    request = ApprovalCreateInstance.ContentApprovalRequest(
                        {"name": name, "category": category}
                    )
                    approvals.append(content.contents(sid).approval_create.create(request))
                status = content.contents(sids[0]).approval_fetch().fetch()
                return sids, fetched.friendly_name, approvals, status

            sids, friendly, approvals, pending = await trio.to_thread.run_sync(author)
            assert friendly == "order_update"
            assert [a.status for a in approvals] == ["pending"] * 3
            assert approvals[0].content_type == "twilio/call-to-action"
            assert pending.whatsapp["status"] == "pending" and pending.whatsapp["name"] == "order_update"

            # Meta has them, as Graph's create took them: renumbered variables, the URL's own {{1}}.
            at_meta = {t["name"]: t for t in sim.templates.templates(WABA)}
            body, buttons = at_meta["order_update"]["components"][0], at_meta["order_update"]["components"][1]
            assert body["text"] == "Hi {{1}}, your order {{2}} has shipped."
            assert body["example"] == {"body_text": [["Ana", "8601"]]}
            assert buttons["buttons"][0] == {
                "type": "URL",
                "text": "Track it",
                "url": "https://shop.example/t/{{1}}",
                "example": ["https://shop.example/t/8601"],
            }
            assert at_meta["otp"]["category"] == "AUTHENTICATION"

            # Not approved yet: refused at create, saying so.
            form = {"From": f"whatsapp:{CLOUD}", "To": "whatsapp:+16505551234", "ContentSid": sids[0]}
            form["ContentVariables"] = json.dumps({"1": "Bo", "2": "42"})
            refused = await client.post(messages_path(), data=form)
            assert (refused.status_code, refused.json()["code"]) == (400, 63027)
            assert "waiting for Meta's review" in refused.json()["message"]

            for name in ("order_update", "survey", "otp"):
                sim.templates.review(WABA, name, "approve")
            await until(lambda: all(daemon.catalog.get(s).status == "APPROVED" for s in sids))  # type: ignore[union-attr]

            def send() -> tuple[list[str], str, list[str]]:
                twilio = sdk(daemon)
                messages = [
                    twilio.messages.create(
                        from_=f"whatsapp:{CLOUD}",
                        to="whatsapp:+16505551234",
                        content_sid=sids[0],
                        content_variables=json.dumps({"1": "Bo", "2": "42"}),
                    ),
                    twilio.messages.create(
                        from_=f"whatsapp:{CLOUD}", to="whatsapp:+16505551235", content_sid=sids[1]
                    ),  # the Content's variables are the defaults
                    twilio.messages.create(
                        from_=f"whatsapp:{CLOUD}",
                        to="whatsapp:+16505551236",
                        content_sid=sids[2],
                        content_variables=json.dumps({"1": "482913"}),
                    ),
                ]
                status = twilio.content.v1.contents(sids[0]).approval_fetch().fetch().whatsapp["status"]
                listed = [c.sid for c in twilio.content.v1.contents.list(page_size=2)]
                return [m.body for m in messages], status, listed

            bodies, status, listed = await trio.to_thread.run_sync(send)
            assert status == "approved"
            assert bodies[0] == "Hi Bo, your order 42 has shipped."
            assert "482913" in bodies[2] and "verification code" in bodies[2]
            # Every Content of the account, followed across pages: the three authored, the synced one.
            assert sorted(listed) == sorted([*sids, sid_of(corpus("pywa_seasonal_promotion"))])
            await until(lambda: len(sim.cloud.received(PNID)) == 3)
            by_name = {m["template"]["name"]: m["template"]["components"] for m in sim.cloud.received(PNID)}
            assert by_name["order_update"][-1] == {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "42"}],
            }
            assert by_name["survey"][-2:] == [
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "arrived_yes"}],
                },
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "1",
                    "parameters": [{"type": "payload", "payload": "arrived_no"}],
                },
            ]
            assert by_name["otp"] == [
                {"type": "body", "parameters": [{"type": "text", "text": "482913"}]},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": "482913"}],
                },
            ]
            assert sim.cloud.counters(PNID).template_errors == 0


async def test_content_api_errors_are_twilios(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):

            def calls() -> list[tuple[int, int]]:
                content = sdk(daemon).content.v1
                out: list[tuple[int, int]] = []
                for attempt in (
                    lambda: content.contents("HX" + "0" * 32).fetch(),
                    lambda: content.contents.create(ContentList.ContentCreateRequest({"types": {}})),
                    lambda: content.contents.create(
                        ContentList.ContentCreateRequest({"types": {"twilio/text": {"body": ""}}})
                    ),
                ):
                    with pytest.raises(TwilioRestException) as caught:
                        attempt()
                    out.append((caught.value.status, caught.value.code))
                return out

            assert await trio.to_thread.run_sync(calls) == [(404, 20404), (400, 20001), (400, 20001)]
            unauthenticated = await httpx.AsyncClient(base_url=daemon.url).get("/v1/Content")
            assert unauthenticated.status_code == 401
            # A body variable without a sample: Meta reviews with samples, so Twilio asks for them.
            made = await client.post("/v1/Content", json={"types": {"twilio/text": {"body": "Hi {{1}}!"}}})
            sid = made.json()["sid"]
            refused = await client.post(
                f"/v1/Content/{sid}/ApprovalRequests/whatsapp", json={"name": "hi", "category": "UTILITY"}
            )
            assert (refused.status_code, refused.json()["code"]) == (400, 20001)
            assert "sample value for {{1}}" in refused.json()["message"]
            # Meta's own refusal comes back in Meta's words.
            made = await client.post(
                "/v1/Content",
                json={"variables": {"1": "x"}, "types": {"twilio/text": {"body": "{{1}} leads"}}},
            )
            refused = await client.post(
                f"/v1/Content/{made.json()['sid']}/ApprovalRequests/whatsapp",
                json={"name": "leading", "category": "UTILITY"},
            )
            assert refused.status_code == 400 and "start or end" in refused.json()["message"]
            assert (await client.delete(f"/v1/Content/{sid}")).status_code == 204
            assert (await client.get(f"/v1/Content/{sid}")).status_code == 404
