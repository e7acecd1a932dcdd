"""The simulator's Cloud API mode, sans-IO under MockClock: auth, shapes, the three limits, templates,
and signed webhooks that the real pywa package accepts and parses."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from pywa import WhatsApp, types

from dispatcher.core.clock import TrioWallClock
from dispatcher.simulator import cloud
from dispatcher.simulator.cloud import CloudApi, CloudNumber, CloudTemplate, sign
from dispatcher.simulator.exchange import SimRequest, SimResponse
from dispatcher.simulator.ids import IdMaker
from tests.helpers.simulator_core import Captured

PNID = "106540352242922"
TOKEN = "EAAsystemuser"
SECRET = "app-secret"
PATH = f"/v23.0/{PNID}/messages"


def make(**number: Any) -> tuple[CloudApi, Captured]:
    captured = Captured()
    api = CloudApi(wall_clock=TrioWallClock(start=1_700_000_000.0), ids=IdMaker(), poster=captured)
    api.add_number(
        CloudNumber(
            number="+15550783881",
            phone_number_id=PNID,
            access_token=TOKEN,
            app_secret=SECRET,
            webhook_url="http://hooks.example/cloud",
            templates=[
                CloudTemplate(name="order_update", language="en_US", body="Hi {{1}}, order {{2}} shipped")
            ],
            **number,
        )
    )
    return api, captured


def send(api: CloudApi, msg: dict[str, Any], token: str = TOKEN) -> SimResponse:
    body = json.dumps({"messaging_product": "whatsapp", "recipient_type": "individual", **msg}).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    return api.respond(SimRequest("POST", PATH, headers, body), PATH)


def text(to: str = "16505551234", body: str = "hello") -> dict[str, Any]:
    return {"to": to, "type": "text", "text": {"body": body, "preview_url": False}}


def error_of(resp: SimResponse) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(resp.body)["error"]
    assert error["type"] == "OAuthException" and error["fbtrace_id"]
    assert error["error_data"]["messaging_product"] == "whatsapp" and error["error_data"]["details"]
    return error


async def test_accepts_a_text_with_the_graph_answer() -> None:
    api, _ = make()
    resp = send(api, text())
    assert resp.status == 200
    answer = json.loads(resp.body)
    assert answer["contacts"] == [{"input": "16505551234", "wa_id": "16505551234"}]
    assert answer["messages"][0]["id"].startswith("wamid.")
    assert api.counters(PNID).accepted == 1


async def test_token_errors_are_190() -> None:
    api, _ = make()
    assert error_of(send(api, text(), token="EAAwrong"))["code"] == 190
    api.revoke_token(PNID, "EAAnew")
    resp = send(api, text())
    assert resp.status == 401 and error_of(resp)["code"] == 190
    assert send(api, text(), token="EAAnew").status == 200


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ({"to": "1", "type": "text", "text": {"body": "x"}}, 131008),
        ({"type": "text", "text": {"body": "x"}}, 131008),
        ({"to": "16505551234", "type": "text", "text": {}}, 131009),
        ({"to": "16505551234", "type": "image", "image": {}}, 131009),
        ({"to": "16505551234", "type": "hologram", "hologram": {}}, 131009),
    ],
)
async def test_bad_shapes_get_their_codes(msg: dict[str, Any], code: int) -> None:
    api, _ = make()
    assert error_of(send(api, msg))["code"] == code
    assert api.counters(PNID).accepted == 0


async def test_messaging_product_is_required() -> None:
    api, _ = make()
    body = json.dumps(text()).encode()
    resp = api.respond(SimRequest("POST", PATH, {"authorization": f"Bearer {TOKEN}"}, body), PATH)
    assert error_of(resp)["code"] == 100


async def test_unknown_phone_number_id_and_paths() -> None:
    api, _ = make()
    for path in ("/v23.0/999/messages", "/v23.0/x", f"/23.0/{PNID}/messages"):
        resp = api.respond(SimRequest("POST", path, {"authorization": f"Bearer {TOKEN}"}, b"{}"), path)
        assert resp.status == 400 and error_of(resp)["code"] == 100


async def test_throughput_limit_is_130429(autojump_clock: trio.testing.MockClock) -> None:
    api, _ = make(throughput=10.0, throughput_burst=5, pair_burst=1000)
    answers = [send(api, text(to=f"1650555{i:04d}")) for i in range(6)]
    assert [a.status for a in answers[:5]] == [200] * 5
    error = error_of(answers[5])
    assert (
        error["code"] == 130429
        and error["error_data"]["details"] == "Cloud API message throughput has been reached."
    )
    await trio.sleep(0.1)
    assert send(api, text(to="16505559999")).status == 200


async def test_pair_limit_is_131056_per_recipient(autojump_clock: trio.testing.MockClock) -> None:
    api, _ = make(pair_interval=6.0, pair_burst=2)
    assert [send(api, text()).status for _ in range(2)] == [200, 200]
    error = error_of(send(api, text()))
    assert error["code"] == 131056 and error["type"] == "OAuthException"
    assert send(api, text(to="16505550000")).status == 200  # other users are unaffected
    await trio.sleep(6.0)
    # A burst borrows: 2 messages owe 2 x 6 s, so 6 s later is still too soon (a plain GCRA said yes).
    assert error_of(send(api, text()))["code"] == 131056
    await trio.sleep(6.0)
    assert send(api, text()).status == 200
    assert api.counters(PNID).pair_limited == 2


async def test_pair_burst_borrows_from_future_quota(autojump_clock: trio.testing.MockClock) -> None:
    """Reference 2.5: up to 45 in 6 s; after a burst of n the next waits about n x 6 s."""
    api, _ = make(pair_interval=6.0, pair_burst=45)
    assert [send(api, text()).status for _ in range(5)] == [200] * 5
    await trio.sleep(7.0)
    assert send(api, text()).status == 400  # the 6th, 7 s later: 5 x 6 s are owed
    await trio.sleep(22.9)
    assert send(api, text()).status == 400
    await trio.sleep(0.1)  # 30 s after the burst
    assert send(api, text()).status == 200
    await trio.sleep(1000.0)  # idle: a whole burst again, and no more
    assert [send(api, text()).status for _ in range(46)] == [200] * 45 + [400]
    await trio.sleep(269.9)
    assert send(api, text()).status == 400
    await trio.sleep(0.1)
    assert send(api, text()).status == 200


async def test_pair_steady_one_per_interval_always_passes(autojump_clock: trio.testing.MockClock) -> None:
    api, _ = make(pair_interval=6.0, pair_burst=45)
    for _ in range(30):
        assert send(api, text()).status == 200
        await trio.sleep(6.0)
    assert api.counters(PNID).pair_limited == 0


async def test_idle_pairs_are_forgotten(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud, "_PAIRS_SWEEP_AT", 50)
    api, _ = make(pair_interval=6.0, pair_burst=45, throughput=1000.0, throughput_burst=1000)
    owing = text(to="16505550001")
    assert [send(api, owing).status for _ in range(10)] == [200] * 10  # owes 60 s
    state = api._numbers[PNID]
    state.pairs_sweep_at = 50
    for i in range(200):
        await trio.sleep(0.5)
        assert send(api, text(to=f"1650556{i:04d}")).status == 200
    # 100 s later: each sweep kept only the pairs that still owe time, so the table stays small.
    assert len(state.pairs) <= 50
    assert "16505550001" not in state.pairs
    assert send(api, owing).status == 200


async def test_tier_counts_business_initiated_recipients(autojump_clock: trio.testing.MockClock) -> None:
    api, _ = make(messaging_limit=2)
    api.inbound_text(PNID, "+16505557777", "hi")  # this customer opened a service window
    assert send(api, text(to="16505550001")).status == 200
    assert send(api, text(to="16505550002")).status == 200
    assert send(api, text(to="16505557777")).status == 200  # a reply: free
    assert send(api, text(to="16505550001")).status == 200  # reached already: free
    error = error_of(send(api, text(to="16505550003")))
    assert error["code"] == 131048
    await trio.sleep(24 * 3600.0)
    assert send(api, text(to="16505550003")).status == 200


async def test_templates_are_checked_against_registered_ones() -> None:
    api, _ = make()

    def template(name: str, lang: str, params: list[str]) -> dict[str, Any]:
        components = [{"type": "BODY", "parameters": [{"type": "text", "text": p} for p in params]}]
        return {
            "to": "16505551234",
            "type": "template",
            "template": {"name": name, "language": {"code": lang}, "components": components},
        }

    ok = send(api, template("order_update", "en_US", ["Ada", "42"]))
    assert ok.status == 200 and json.loads(ok.body)["messages"][0]["message_status"] == "accepted"
    assert error_of(send(api, template("order_update", "de_DE", ["Ada", "42"])))["code"] == 132001
    assert error_of(send(api, template("nope", "en_US", [])))["code"] == 132001
    assert error_of(send(api, template("order_update", "en_US", ["Ada"])))["code"] == 132000
    api.register_template(PNID, CloudTemplate(name="hello", language="en_US", body="Hello"))
    assert send(api, template("hello", "en_US", [])).status == 200
    assert api.counters(PNID).template_errors == 3


async def test_webhooks_are_signed_and_pywa_parses_them(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    api, captured = make()
    await nursery.start(api.run)
    wamid = json.loads(send(api, text()).body)["messages"][0]["id"]
    failed = json.loads(send(api, text(to="15559990001")).body)["messages"][0]["id"]
    inbound = api.inbound_text(PNID, "+16505551234", "hi there", profile_name="Ada")
    await trio.sleep(1.0)
    assert len(captured.posts) == 5 and api.counters(PNID).webhooks_sent == 5

    hook = WhatsApp(phone_id=PNID, token=None, verify_token="vt", app_secret=SECRET, validate_updates=True)
    seen: list[tuple[Any, ...]] = []
    hook.on_message()(lambda _, m: seen.append(("message", m.id, m.from_user.wa_id, m.text)))
    hook.on_message_status()(
        lambda _, s: seen.append(("status", s.id, str(s.status), s.error and s.error.code))
    )
    for url, body, headers in captured.posts:
        assert url == "http://hooks.example/cloud"
        assert headers["x-hub-signature-256"] == sign(SECRET, body)
        assert hook.webhook_update_validator(body, headers["x-hub-signature-256"]) is None
        assert hook.webhook_update_handler(body) == ("ok", 200)
    assert (
        hook.webhook_update_validator(captured.posts[0][1], sign("other", captured.posts[0][1])) is not None
    )
    assert ("message", inbound, "16505551234", "hi there") in seen
    statuses = [(s[1], s[2], s[3]) for s in seen if s[0] == "status"]
    assert (wamid, "sent", None) in statuses and (wamid, "read", None) in statuses
    assert (failed, "failed", 131026) in statuses
    assert isinstance(types.MessageStatus, type)


async def test_control_api_adds_numbers_sends_inbound_and_revokes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    from dispatcher.simulator.core import Simulator

    captured = Captured()
    sim = Simulator(status_delays=None, cloud_poster=captured)
    await nursery.start(sim.run)

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> SimResponse:
        raw = b"" if body is None else json.dumps(body).encode()
        return sim.respond(SimRequest(method, path, {}, raw))

    number = {
        "number": "+15550783881",
        "phone_number_id": PNID,
        "access_token": TOKEN,
        "app_secret": SECRET,
        "webhook_url": "http://hooks.example/cloud",
    }
    assert call("POST", "/_sim/cloud/numbers", number).status == 201
    assert call("POST", "/_sim/cloud/numbers", number).status == 400  # already served
    assert call("POST", "/_sim/cloud/numbers", {**number, "phone_number_id": "x"}).status == 400
    assert [n["phone_number_id"] for n in json.loads(call("GET", "/_sim/cloud/numbers").body)] == [PNID]
    assert call("POST", f"/_sim/cloud/{PNID}/templates", {"name": "hi", "body": "Hi {{1}}"}).status == 201
    sent = call("POST", f"/_sim/cloud/{PNID}/inbound", {"from": "+16505551234", "body": "hello"})
    assert sent.status == 201 and json.loads(sent.body)["id"].startswith("wamid.")
    await trio.sleep(0.1)
    assert len(captured.posts) == 1
    assert call("POST", f"/_sim/cloud/{PNID}/revoke", {"token": "EAAnew"}).status == 200
    headers = {"authorization": f"Bearer {TOKEN}"}
    body = json.dumps({"messaging_product": "whatsapp", **text()}).encode()
    assert error_of(sim.respond(SimRequest("POST", PATH, headers, body)))["code"] == 190
    assert json.loads(call("GET", f"/_sim/cloud/{PNID}").body)["unauthorized"] == 1
    assert call("GET", "/_sim/cloud/999").status == 404
    assert call("POST", "/_sim/cloud/999/inbound", {"from": "+1650", "body": "x"}).status == 404
    assert call("DELETE", "/_sim/cloud/numbers").status == 404
