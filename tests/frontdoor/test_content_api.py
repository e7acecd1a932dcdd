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
from tests.helpers.http_servers import Reply, Seen, h11_handler, start_server, url
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


JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 2000 + b"\xff\xd9"


async def test_a_media_content_uploads_its_header_example_and_sends_by_link(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async def files(seen: Seen) -> Reply:
        if seen.target == b"/img/box.jpg":
            return Reply(headers=[(b"content-type", b"image/jpeg")], chunks=(JPEG,))
        return Reply(status=404, chunks=(b"no",))

    server = await start_server(nursery, h11_handler(files))
    trusted = '[callbacks]\nallow_private = ["127.0.0.1/32"]\n'
    media_content = {
        "friendly_name": "box_photo",
        "language": "en",
        "variables": {"1": "box", "2": "Ana"},
        "types": {
            "twilio/media": {"body": "Hi {{2}}, here it is.", "media": [url(server, "/img/{{1}}.jpg")]}
        },
    }
    with trio.fail_after(60):
        cfg = waba_config(tmp_path / "d", app_id="1234567890", extra=trusted)
        async with running_daemon(cfg) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            sid = (await client.post("/v1/Content", json=media_content)).json()["sid"]
            submitted = await client.post(
                f"/v1/Content/{sid}/ApprovalRequests/whatsapp",
                json={"name": "box_photo", "category": "UTILITY"},
            )
            assert submitted.status_code == 201, submitted.text
            assert [s.target for s in server.requests] == [b"/img/box.jpg"]  # the sample, fetched once
            [at_meta] = sim.templates.templates(WABA)
            header = at_meta["components"][0]
            assert header["format"] == "IMAGE" and header["example"]["header_handle"][0].startswith("4::")
            sim.templates.review(WABA, "box_photo", "approve")
            await until(lambda: daemon.catalog.get(sid).status == "APPROVED")  # type: ignore[union-attr]
            form = {
                "From": f"whatsapp:{CLOUD}",
                "To": "whatsapp:+16505551234",
                "ContentSid": sid,
                "ContentVariables": json.dumps({"1": "crate", "2": "Bo"}),
            }
            sent = await client.post(messages_path(), data=form)
            assert sent.status_code == 201 and sent.json()["body"] == "Hi Bo, here it is.", sent.text
            await until(lambda: len(sim.cloud.received(PNID)) == 1)
            [message] = sim.cloud.received(PNID)
            assert message["template"]["components"][0] == {
                "type": "header",
                "parameters": [{"type": "image", "image": {"link": url(server, "/img/crate.jpg")}}],
            }
            # A sample that cannot be fetched: refused, saying why.
            missing = {**media_content, "variables": {"1": "nothing", "2": "Ana"}}
            sid = (await client.post("/v1/Content", json=missing)).json()["sid"]
            refused = await client.post(
                f"/v1/Content/{sid}/ApprovalRequests/whatsapp",
                json={"name": "nothing", "category": "UTILITY"},
            )
            assert refused.status_code == 400 and "HTTP 404" in refused.json()["message"]


async def test_a_media_content_needs_the_wabas_app(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path / "d")) as (_daemon, client):
            content = {
                "variables": {"1": "Ana"},
                "types": {"twilio/media": {"body": "Hi {{1}}.", "media": ["https://cdn.example.com/a.jpg"]}},
            }
            sid = (await client.post("/v1/Content", json=content)).json()["sid"]
            refused = await client.post(
                f"/v1/Content/{sid}/ApprovalRequests/whatsapp", json={"name": "photo", "category": "UTILITY"}
            )
            assert refused.status_code == 400
            # Refused before any fetch: nothing is downloaded for a WABA with no app to upload through.
            assert (
                "app_id" in refused.json()["message"] or "could not be fetched" in refused.json()["message"]
            )
