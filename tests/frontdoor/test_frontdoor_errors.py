"""Never a 500 for bad input, never HTML: every route answers undecodable bodies with a JSON 400,
quart's own HTTP errors are JSON, and an unexpected exception is a JSON 500 with a request id."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from dispatcher.frontdoor.app import MAX_REQUEST_BYTES
from dispatcher.frontdoor.errors import REQUEST_ID_HEADER, LastResort
from dispatcher.frontdoor.fastlane import FastLane
from tests.helpers.asgi import asgi_post
from tests.helpers.daemon import ACCOUNT, PNID, messages_path, running_daemon
from tests.helpers.frontdoor_routes import (
    BATCH,
    BODY_ROUTES,
    CLOUD_HOOK,
    CREATE_JSON,
    ONPREM_PATH,
    UPDATE,
    Route,
    assert_error_shape,
    hostile_config,
    snapshot,
)

REQUEST_ID = re.compile(r"^RQ[0-9a-f]{32}$")


def deep(levels: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * levels + close * levels


def deep_objects(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def cloud_envelope(value: bytes) -> bytes:
    return (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":'
        + value
        + b"}]}]}"
    )


def cloud_message(extra: bytes) -> bytes:
    return cloud_envelope(
        b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550009999","phone_number_id":"'
        + PNID.encode()
        + b'"},"messages":[{"from":"16505551234","id":"wamid.X","timestamp":"1700000000","type":"text",'
        + extra
        + b"}]}"
    )


# Each is undecodable JSON: too deep (in a known field, an unknown one, at the top), or a string (value
# or key) that is not UTF-8 (0xff; a UTF-8-encoded surrogate; a lone surrogate escape). A webhook decoder
# skips fields it does not know without reading them: there such a body is an empty delivery.
UNDECODABLE = [
    deep(100_000),
    deep(1_500),
    deep_objects(5_000),
    b'{"To":' + deep(5_000) + b"}",
    b'{"unknown":' + deep(5_000) + b"}",
    b'{"statuses":' + deep(5_000) + b"}",
    b'[{"to":' + deep(5_000) + b"}]",
    cloud_envelope(deep(5_000)),
    cloud_message(b'"zz":' + deep(5_000)),
    cloud_message(b'"text":{"body":"\xff"}'),
    b'{"To":"\xff"}',
    b'{"Body":"\xed\xa0\x80"}',
    b'{"\xff":"x"}',
    b'{"sid":"\xff","account":"AC","name":"n","language":"en","body":"x"}',
    b'[{"to":"\xc3"}]',
    b'{"statuses":[{"id":"\xff","status":"sent","timestamp":"1","recipient_id":"1"}]}',
    b'{"Body":"\\ud800"}',
]


@pytest.fixture
async def daemon(tmp_path: Path):
    with trio.fail_after(60):
        async with running_daemon(hostile_config(tmp_path / "data")) as pair:
            yield pair


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
async def test_undecodable_json_is_a_4xx_on_every_route(daemon, route: Route) -> None:
    running, client = daemon
    before = snapshot(running.store)
    with capture_logs() as logs:
        for body in UNDECODABLE:
            resp = await client.post(route.path, content=body, headers=route.headers_for(body), auth=None)
            if route.webhook and resp.status_code == 200:
                # The bad part sat in a field the webhook decoder skips (unknown to it): nothing to apply.
                assert resp.content == b"{}", (route.name, body[:80])
                continue
            assert_error_shape(route, resp.status_code, resp.headers["content-type"], resp.content)
            assert resp.status_code in (400, 403, 404), (route.name, body[:80], resp.text)
    assert snapshot(running.store) == before
    assert not [e for e in logs if e["event"] == "frontdoor.unhandled"]
    assert not [e for e in logs if e.get("exc_info")], "a bad body is no reason for a traceback"


async def test_quarts_own_errors_are_twilio_json(daemon) -> None:
    _, client = daemon
    missing = await client.get("/nothing/here")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert missing.json() == {
        "code": 20404,
        "message": "The requested resource /nothing/here was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    }
    wrong_method = await client.put(messages_path())
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 20004
    assert "POST" in wrong_method.headers["allow"]
    too_large = await client.post(
        UPDATE.path,
        content=b"{" + b" " * MAX_REQUEST_BYTES + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert too_large.status_code == 413 and too_large.json()["code"] == 21617
    signed_too_large = await client.post(CLOUD_HOOK.path, content=b" " * (MAX_REQUEST_BYTES + 1), auth=None)
    assert signed_too_large.status_code == 413
    assert signed_too_large.headers["content-type"] == "application/json"


def _boom(*_: Any, **__: Any) -> NoReturn:
    raise RuntimeError("a bug, not the client's fault")


async def _expect_500(resp: httpx.Response, logs: list[dict[str, Any]], route: str) -> None:
    assert resp.status_code == 500 and resp.headers["content-type"] == "application/json"
    request_id = resp.headers[REQUEST_ID_HEADER]
    assert REQUEST_ID.match(request_id)
    assert resp.json() == {
        "code": 20500,
        "message": f"Internal server error (request {request_id})",
        "more_info": "https://www.twilio.com/docs/errors/20500",
        "status": 500,
    }
    [line] = [e for e in logs if e["event"] == "frontdoor.unhandled"]
    assert line["request_id"] == request_id and line["route"] == route and line["log_level"] == "error"
    assert line["error"] == "RuntimeError" and isinstance(line["exc_info"], RuntimeError)


async def test_an_unexpected_exception_is_a_json_500_with_a_request_id(
    daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, client = daemon
    monkeypatch.setattr(running.gateway, "fetch", _boom)  # a quart route
    monkeypatch.setattr(running.gateway, "create", _boom)  # the fast lane's create
    monkeypatch.setattr(running.inbox, "apply", _boom)  # the fast lane's webhook
    with capture_logs() as logs:
        resp = await client.get(messages_path("SM" + "1" * 32))
    await _expect_500(resp, logs, "/2010-04-01/Accounts/<account_sid>/Messages/<sid>.json")
    with capture_logs() as logs:
        resp = await client.post(
            CREATE_JSON.path,
            json={"To": "whatsapp:+15551234567", "From": "whatsapp:+15550000001", "Body": "x"},
        )
    await _expect_500(resp, logs, "/2010-04-01/Accounts/<account_sid>/Messages.json")
    with capture_logs() as logs:
        resp = await client.post(ONPREM_PATH.path, content=b'{"statuses":[]}', auth=None)
    await _expect_500(resp, logs, "/webhooks/onprem/<digits>/<secret>")
    assert ACCOUNT not in str(logs) and "hook-1-secret" not in str(logs)


async def _asgi_get(app: Any, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def test_last_resort_answers_for_an_app_that_raised_before_answering() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("inside the framework")

    with capture_logs() as logs:
        status, headers, body = await _asgi_get(LastResort(broken), "/webhooks/onprem/15550000001/s3cret/x")
    assert status == 500 and headers[b"content-type"] == b"application/json"
    request_id = headers[REQUEST_ID_HEADER.lower().encode()].decode()
    assert request_id.encode() in body
    [line] = logs
    assert line["request_id"] == request_id and line["route"] == "/webhooks/onprem/15550000001/..."
    assert "s3cret" not in str(line)


async def test_last_resort_leaves_a_started_answer_to_the_server() -> None:
    async def half(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("after the head")

    with capture_logs() as logs, pytest.raises(KeyError):
        await _asgi_get(LastResort(half), "/healthz")
    assert [e["event"] for e in logs] == ["frontdoor.unhandled"]


async def test_the_fast_lane_and_quart_refuse_undecodable_batches_alike(daemon) -> None:
    """The fast lane's answer to a too-deep batch is byte for byte the quart route's."""
    running, _ = daemon
    body = b"[" + deep(5_000) + b"]"
    expected = await asgi_post(running.quart_app, BATCH.path, BATCH.headers, body)
    lane = FastLane(LastResort(_boom), running.routes, running.directory, max_request_bytes=MAX_REQUEST_BYTES)
    got = await asgi_post(lane, BATCH.path, BATCH.headers, body)
    assert got == expected and expected[0] == 400
