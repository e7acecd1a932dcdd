"""The simulator's Graph template CRUD and Meta's review, driven with no sockets (``Simulator.respond``);
the webhooks it posts are read back by the daemon's own Cloud webhook decoder."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import trio
import trio.testing

from dispatcher.channels import cloud_webhook
from dispatcher.core.clock import TrioWallClock
from dispatcher.simulator.cloud import CloudNumber
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.exchange import SimRequest, SimResponse
from dispatcher.simulator.graph_templates import SimWaba
from tests.helpers.simulator_core import Captured
from tests.helpers.templates import WABA, WABA_TOKEN, corpus

PNID = "106540352242922"
AUTH = {"authorization": f"Bearer {WABA_TOKEN}", "host": "127.0.0.1:1"}
BASE = f"/v23.0/{WABA}/message_templates"


def simulator(captured: Captured | None = None) -> Simulator:
    sim = Simulator(wall_clock=TrioWallClock(start=1_700_000_000.0), cloud_poster=captured)
    sim.templates.add_waba(SimWaba(id=WABA, access_token=WABA_TOKEN))
    sim.cloud.add_number(
        CloudNumber(
            number="+15550783881",
            phone_number_id=PNID,
            access_token="EAAnumber",
            app_secret="app-secret",
            webhook_url="http://hooks.example/cloud",
            waba_id=WABA,
        )
    )
    return sim


def call(
    sim: Simulator, method: str, target: str, body: Any = None, headers: dict[str, str] = AUTH
) -> SimResponse:
    raw = b"" if body is None else json.dumps(body).encode()
    return sim.respond(SimRequest(method, target, headers, raw))


def answer(resp: SimResponse) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(resp.body)
    return out


async def test_create_then_list_every_page_get_and_delete() -> None:
    sim = simulator()
    doc = corpus("pywa_seasonal_promotion")
    created = call(sim, "POST", BASE, doc)
    assert created.status == 200 and answer(created)["status"] == "PENDING"
    template_id = answer(created)["id"]
    for i in range(30):
        assert call(sim, "POST", BASE, {**doc, "name": f"promo_{i:02d}"}).status == 200
    names: list[str] = []
    target = BASE + "?limit=10"
    pages = 0
    while target:
        page = answer(call(sim, "GET", target))
        names += [t["name"] for t in page["data"]]
        pages += 1
        following = page.get("paging", {}).get("next")
        target = following.removeprefix("http://127.0.0.1:1") if following else ""
    assert pages == 4 and len(names) == 31 and len(set(names)) == 31
    fetched = answer(call(sim, "GET", f"/v23.0/{template_id}"))
    assert (fetched["name"], fetched["status"], fetched["components"]) == (
        "seasonal_promotion",
        "PENDING",
        doc["components"],
    )
    assert answer(call(sim, "DELETE", BASE + "?name=seasonal_promotion")) == {"success": True}
    assert call(sim, "GET", f"/v23.0/{template_id}").status == 400


async def test_metas_checks_refuse_a_bad_template() -> None:
    sim = simulator()
    doc = corpus("pywa_seasonal_promotion")
    body = next(c for c in doc["components"] if c["type"] == "BODY")
    cases = [
        ({**doc, "name": "Seasonal Promo"}, "lowercase"),
        ({**doc, "category": "PROMO"}, "category"),
        ({**doc, "components": [c for c in doc["components"] if c["type"] != "BODY"]}, "BODY"),
        ({**doc, "components": [{**body, "text": "{{1}} starts here {{2}} {{3}}"}]}, "start or end"),
        ({**doc, "components": [{**body, "text": "Hi {{2}} and {{1}}."}]}, "{{1}}..{{n}}"),
        ({**doc, "components": [{"type": "BODY", "text": "Hi {{1}}, ok?"}]}, "example"),
        ({**doc, "components": [body, {"type": "FOOTER", "text": "f" * 61}]}, "footer"),
    ]
    for bad, words in cases:
        resp = call(sim, "POST", BASE, bad)
        assert resp.status == 400 and answer(resp)["error"]["code"] == 100, bad
        assert words in answer(resp)["error"]["error_data"]["details"], answer(resp)
    assert call(sim, "POST", BASE, doc).status == 200
    again = call(sim, "POST", BASE, doc)
    assert answer(again)["error"]["error_subcode"] == 2388024  # the same name and language once
    refused = call(sim, "GET", BASE, headers={"authorization": "Bearer wrong"})
    assert refused.status == 401 and answer(refused)["error"]["code"] == 190


async def test_review_posts_metas_webhooks_the_daemon_decodes(autojump_clock: trio.testing.MockClock) -> None:
    captured = Captured()
    sim = simulator(captured)
    template_id = answer(call(sim, "POST", BASE, corpus("pywa_seasonal_promotion")))["id"]
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        for path, body in [
            ("approve", {}),
            ("pause", {}),
            ("reject", {"reason": "INCORRECT_CATEGORY"}),
            ("quality", {"score": "red"}),
            ("category", {"category": "utility"}),
        ]:
            resp = call(sim, "POST", f"/_sim/wabas/{WABA}/templates/{template_id}/{path}", body)
            assert resp.status == 200, resp.body
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    changes = [cloud_webhook.decode(body, PNID).fields[0] for _, body, _ in captured.posts]
    assert [c.field for c in changes] == [
        "message_template_status_update",
        "message_template_status_update",
        "message_template_status_update",
        "message_template_quality_update",
        "template_category_update",
    ]
    assert {c.waba_id for c in changes} == {WABA} and all(c.time > 0 for c in changes)
    values = [msgspec.json.decode(c.value) for c in changes]
    assert [v.get("event") for v in values[:3]] == ["APPROVED", "PAUSED", "REJECTED"]
    assert values[1]["other_info"]["title"] == "FIRST_PAUSE" and values[2]["reason"] == "INCORRECT_CATEGORY"
    assert values[0]["message_template_id"] == int(template_id)
    assert (values[3]["previous_quality_score"], values[3]["new_quality_score"]) == ("UNKNOWN", "RED")
    assert (values[4]["previous_category"], values[4]["new_category"]) == ("MARKETING", "UTILITY")


async def test_sends_are_checked_against_the_approved_template() -> None:
    sim = simulator()
    doc = corpus("meta_docs_order_shipped_named")
    sim.templates.seed(WABA, doc)
    path = f"/v23.0/{PNID}/messages"
    headers = {"authorization": "Bearer EAAnumber"}

    def send(components: list[dict[str, Any]], name: str = "order_shipped_named") -> dict[str, Any]:
        template = {"name": name, "language": {"code": "en_US"}, "components": components}
        body = {
            "messaging_product": "whatsapp",
            "to": "16505551234",
            "type": "template",
            "template": template,
        }
        return answer(call(sim, "POST", path, body, headers))

    header = {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.test/a.jpg"}}]}
    body = {
        "type": "body",
        "parameters": [
            {"type": "text", "text": "Ana", "parameter_name": "first_name"},
            {"type": "text", "text": "1", "parameter_name": "order_id"},
        ],
    }
    url = {"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": "a"}]}
    assert "messages" in send([header, body, url])
    assert send([header, body])["error"]["code"] == 132000  # the URL button's suffix is missing
    assert send([body, url])["error"]["code"] == 132000  # the header image is missing
    renamed = {**body, "parameters": [{**p, "parameter_name": "x"} for p in body["parameters"]]}
    assert send([header, renamed, url])["error"]["code"] == 132012
    newline = {**body, "parameters": [{**body["parameters"][0], "text": "a\nb"}, body["parameters"][1]]}
    assert send([header, newline, url])["error"]["code"] == 132018
    assert send([header, body, url], name="nope")["error"]["code"] == 132001
    sim.templates.review(WABA, "order_shipped_named", "pause")
    assert send([header, body, url])["error"]["code"] == 132015
    sim.templates.review(WABA, "order_shipped_named", "disable")
    assert send([header, body, url])["error"]["code"] == 132016


async def test_a_media_header_needs_an_uploaded_handle() -> None:
    sim = simulator()
    doc = corpus("pywa_order_confirmation")  # its document header's example is a handle ("4::YX...")
    assert call(sim, "POST", BASE, doc).status == 200
    header = {
        "type": "HEADER",
        "format": "IMAGE",
        "example": {"header_handle": ["https://cdn.example.com/a.jpg"]},
    }
    body = next(c for c in doc["components"] if c["type"] == "BODY")
    refused = call(sim, "POST", BASE, {**doc, "name": "by_url", "components": [header, body]})
    assert answer(refused)["error"]["error_subcode"] == 2388084
    session = answer(
        call(sim, "POST", "/v23.0/1234567890/uploads?file_name=a.jpg&file_length=3&file_type=image/jpeg")
    )
    target = "/v23.0/" + session["id"]
    assert call(sim, "POST", target, headers={**AUTH, "file_offset": "1"}).status == 400
    uploaded = sim.respond(SimRequest("POST", target, {**AUTH, "file_offset": "0"}, b"abc"))
    handle = answer(uploaded)["h"]
    header["example"] = {"header_handle": [handle]}
    assert call(sim, "POST", BASE, {**doc, "name": "by_handle", "components": [header, body]}).status == 200
