"""The simulator serving spec channels, sans-IO under MockClock: its control API, the sends it
refuses as the spec says, and the webhooks it posts (statuses walked, signed, at the spec's paths)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

import trio
import trio.testing

from actors.transport import Headers
from dispatcher.simulator import SimRequest
from dispatcher.simulator.core import Simulator

SMS = "+15550007777"
LINE = "+15550003333"
USER = "U4af49806292f6e1a2b3c4d5e6f708192"
VONAGE = {"api_key": "k", "api_secret": "s", "webhook_secret": "w"}


class Posts:
    """A recording webhook poster (url, body, headers), answering 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes, Headers]] = []

    async def __call__(self, url: str, body: bytes, headers: Headers) -> int:
        self.posts.append((url, body, headers))
        await trio.lowlevel.checkpoint()
        return 200


def control(sim: Simulator, method: str, route: str, payload: object = None) -> tuple[int, object]:
    body = b"" if payload is None else json.dumps(payload).encode()
    resp = sim.respond(SimRequest(method, f"/_sim/spec/{route}", {"content-type": "application/json"}, body))
    return resp.status, json.loads(resp.body) if resp.body else None


def vonage_send(sim: Simulator, to: str, **fields: str) -> tuple[int, dict[str, object]]:
    form = {
        "api_key": "k",
        "api_secret": "s",
        "from": "15550007777",
        "to": to,
        "text": "hi",
        "type": "unicode",
        "status-report-req": "1",
        "client-ref": "SM" + "0" * 32,
        **fields,
    }
    headers = {"content-type": "application/x-www-form-urlencoded"}
    resp = sim.respond(SimRequest("POST", "/15550007777/sms/json", headers, urlencode(form).encode()))
    return resp.status, json.loads(resp.body)


async def test_a_vonage_number_added_over_the_control_api_takes_sends_and_walks_receipts(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    posts = Posts()
    sim = Simulator(spec_poster=posts)
    await nursery.start(sim.run)
    number = {
        "number": SMS,
        "kind": "vonage-sms",
        "settings": VONAGE,
        "webhook_url": "http://hook.test/dlr/w",
    }
    assert control(sim, "POST", "numbers", number) == (201, {"number": SMS, "kind": "vonage-sms"})
    assert control(sim, "POST", "numbers", number)[0] == 400  # already served
    status, answer = vonage_send(sim, "447700900123")
    assert status == 200
    [message] = answer["messages"]  # type: ignore[index]
    assert message["status"] == "0" and message["to"] == "447700900123"
    await trio.sleep(1)
    receipts = [json.loads(body) for _, body, _ in posts.posts]
    assert [r["status"] for r in receipts] == ["accepted", "delivered"]
    assert {r["messageId"] for r in receipts} == {message["message-id"]}
    assert receipts[-1]["msisdn"] == "447700900123" and receipts[-1]["err-code"] == "0"
    assert control(sim, "GET", f"received?number=%2B{SMS[1:]}")[1] == {
        "messages": [
            {
                "id": message["message-id"],
                "kind": "text",
                "recipient": "447700900123",
                "values": {"to_digits": "447700900123", "body": "hi", "sid": "SM" + "0" * 32},
            }
        ]
    }
    # Refused as Vonage refuses: credentials, a missing parameter, over the rate.
    assert vonage_send(sim, "447700900123", api_secret="wrong")[1]["messages"][0]["status"] == "4"  # type: ignore[index]
    assert vonage_send(sim, "")[1]["messages"][0]["status"] == "2"  # type: ignore[index]


async def test_line_pushes_a_customers_message_signed_and_refuses_a_reused_retry_key(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    posts = Posts()
    sim = Simulator(spec_poster=posts)
    await nursery.start(sim.run)
    settings = {"channel_id": "1656789012", "channel_secret": "secret", "bot_user_id": "U123"}
    number = {"number": LINE, "kind": "line", "settings": settings, "webhook_url": "http://hook.test/line"}
    assert control(sim, "POST", "numbers", number)[0] == 201
    status, sent = control(sim, "POST", "inbound", {"number": LINE, "from": USER, "body": "hello"})
    assert status == 200
    await trio.sleep(0.1)
    [(_, body, headers)] = posts.posts
    digest = base64.b64encode(hmac.new(b"secret", body, hashlib.sha256).digest())
    assert (b"x-line-signature", digest) in headers
    doc = json.loads(body)
    assert doc["destination"] == "U123"
    [event] = doc["events"]
    assert event["type"] == "message" and event["source"] == {"type": "user", "userId": USER}
    assert event["message"]["id"] == sent["id"] and event["message"]["text"] == "hello"  # type: ignore[index]
    # A push: log in, then the same retry key twice.
    token_form = "grant_type=client_credentials&client_id=1656789012&client_secret=secret"
    login = sim.respond(SimRequest("POST", "/15550003333/oauth2/v3/token", {}, token_form.encode()))
    token = json.loads(login.body)["access_token"]
    push = json.dumps({"to": USER, "messages": [{"type": "text", "text": "hi"}]}).encode()
    headers_in = {
        "authorization": f"Bearer {token}",
        "x-line-retry-key": "0123abcd-0000-0000-0000-000000000000",
    }
    first = sim.respond(SimRequest("POST", "/15550003333/v2/bot/message/push", headers_in, push))
    again = sim.respond(SimRequest("POST", "/15550003333/v2/bot/message/push", headers_in, push))
    assert first.status == 200 and again.status == 409
    assert again.header("x-line-accepted-request-id") == json.loads(first.body)["sentMessages"][0]["id"]
    wrong = sim.respond(
        SimRequest("POST", "/15550003333/oauth2/v3/token", {}, token_form.replace("secret", "x").encode())
    )
    assert wrong.status == 401


async def test_control_api_errors_name_what_is_wrong() -> None:
    sim = Simulator()
    assert control(sim, "POST", "numbers", {"number": SMS, "kind": "telegraph"})[0] == 404
    assert control(sim, "POST", "numbers", {"number": SMS, "kind": "vonage-sms", "bogus": 1})[0] == 400
    assert control(sim, "POST", "inbound", {"number": SMS, "from": "+1", "body": "x"})[0] == 404
    assert control(sim, "GET", "nowhere")[0] == 404
