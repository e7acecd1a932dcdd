"""The fast lane answers the hot routes exactly as the quart routes do, and passes the rest on.

The daemon serves through ``FastLane``; the quart app behind it (``Running.quart_app``),
driven in-process over ASGI, is the reference. Every case compares status,
content type and body bytes (success bodies carry a fresh sid and dates, so
those compare by shape).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
import trio

from dispatcher.frontdoor.app import MAX_REQUEST_BYTES
from dispatcher.frontdoor.fastlane import FastLane
from dispatcher.ops.metrics import RequestCounts
from tests.helpers.asgi import asgi_post
from tests.helpers.daemon import ACCOUNT, NUMBERS, TOKEN, messages_path, running_daemon, sandbox_config

FROM = "whatsapp:+15550000001"
TO = "whatsapp:+15551234567"
BASIC = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def daemon(tmp_path: Path):
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", rate=0.001, burst=1)) as pair:
            yield pair


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


CREATE = messages_path()
ERROR_CASES: list[tuple[str, dict[str, str], bytes]] = [
    (CREATE, {"Content-Type": FORM}, form(To=TO, From=FROM, Body="hi")),  # no credentials
    (CREATE, {"Authorization": "Basic bm90OnJpZ2h0", "Content-Type": FORM}, form(To=TO, From=FROM, Body="x")),
    (CREATE, {"Authorization": BASIC, "Content-Type": "text/plain"}, b"To=x"),
    (CREATE, {"Authorization": BASIC, "Content-Type": FORM}, b"To=" + b"\xff"),
    (CREATE, {"Authorization": BASIC, "Content-Type": "application/json"}, b"[1, 2"),
    (CREATE, {"Authorization": BASIC, "Content-Type": FORM}, form(From=FROM, Body="no to")),
    (CREATE, {"Authorization": BASIC, "Content-Type": FORM}, form(To=TO, Body="no from")),
    (CREATE, {"Authorization": BASIC, "Content-Type": FORM, "Idempotency-Key": "has space"}, form(To=TO)),
    (
        "/2010-04-01/Accounts/ACnotmine/Messages.json",
        {"Authorization": BASIC},
        form(To=TO, From=FROM, Body="x"),
    ),
    ("/v1/messages:batch", {"Content-Type": "application/json"}, b"[]"),
    ("/v1/messages:batch", {"Authorization": BASIC}, b"[]"),
    ("/v1/messages:batch", {"Authorization": BASIC}, b'{"to": 1}'),
    ("/v1/messages:batch", {"Authorization": BASIC}, b'[{"to": "x", "surprise": 1}]'),
    ("/v1/messages:batch", {"Authorization": BASIC, "Idempotency-Key": "k1"}, b'[{"to": "x"}]'),
    ("/v1/messages:batch", {"Authorization": BASIC}, b"[" + b'{"to":"x"},' * 1000 + b'{"to":"x"}]'),
    ("/v1/messages:batch", {"Authorization": BASIC}, b"[" + b" " * (MAX_REQUEST_BYTES + 1) + b"]"),
    (CREATE, {"Authorization": BASIC, "Content-Type": FORM}, b"Body=" + b"a" * MAX_REQUEST_BYTES),
]


@pytest.mark.parametrize("case", range(len(ERROR_CASES)))
async def test_errors_are_byte_for_byte_the_quart_answers(daemon, case: int) -> None:
    running, _ = daemon
    path, headers, body = ERROR_CASES[case]
    reference = running.quart_app
    lane = FastLane(_refuse, running.routes, running.directory, max_request_bytes=MAX_REQUEST_BYTES)
    expected = await asgi_post(reference, path, headers, body)
    got = await asgi_post(lane, path, headers, body)
    assert got == expected
    assert expected[0] >= 400


async def test_batch_answers_match_item_by_item(daemon) -> None:
    running, _ = daemon
    body = msgspec.json.encode([{"to": TO, "from": FROM, "body": "ok"}, {"to": TO, "body": "no from"}])
    headers = {"Authorization": BASIC, "Content-Type": "application/json"}
    status_q, type_q, body_q = await asgi_post(running.quart_app, "/v1/messages:batch", headers, body)
    lane = FastLane(_refuse, running.routes, running.directory, max_request_bytes=MAX_REQUEST_BYTES)
    status_f, type_f, body_f = await asgi_post(lane, "/v1/messages:batch", headers, body)
    assert (status_f, type_f) == (status_q, type_q) == (200, "application/json")
    quart, fast = msgspec.json.decode(body_q), msgspec.json.decode(body_f)
    assert quart["results"][1] == fast["results"][1]  # the rejection, byte for byte
    assert fast["accepted"] == quart["accepted"] == 1
    assert (
        fast["results"][0]["sid"].startswith("SM") and fast["results"][0]["sid"] != quart["results"][0]["sid"]
    )


async def test_create_through_the_daemon_answers_like_the_resource_and_is_counted(daemon) -> None:
    _, client = daemon
    answer = await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "fast"})
    assert answer.status_code == 201
    assert answer.headers["content-type"] == "application/json"
    resource = answer.json()
    reference = await client.get(messages_path(resource["sid"]))  # the quart route renders the same record
    stable = ("sid", "account_sid", "to", "from", "body", "date_created", "uri", "num_segments")
    assert {k: reference.json()[k] for k in stable} == {k: resource[k] for k in stable}
    metrics = (await client.get("/metrics")).text
    route = "/2010-04-01/Accounts/<account_sid>/Messages.json"
    assert f'method="POST",route="{route}",status="201"' in metrics.replace(", ", ",")


async def test_other_requests_pass_through_unchanged(daemon) -> None:
    running, _ = daemon
    seen: list[tuple[str, str]] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope.get("method", scope["type"]), scope.get("path", "")))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"spy", "more_body": False})

    counts = RequestCounts()
    lane = FastLane(
        spy, running.routes, running.directory, max_request_bytes=MAX_REQUEST_BYTES, requests=counts
    )
    for path in (
        CREATE + "/",
        "/v1/messages:batchx",
        messages_path("SM" + "0" * 32),
        "/2010-04-01/Accounts/a/b/Messages.json",
    ):
        assert (await asgi_post(lane, path, {"Authorization": BASIC}, b"")) == (299, "", b"spy")
    assert [p for _, p in seen][-4:] == [
        CREATE + "/",
        "/v1/messages:batchx",
        messages_path("SM" + "0" * 32),
        "/2010-04-01/Accounts/a/b/Messages.json",
    ]
    assert counts.counts == {}
    status, _, _ = await asgi_post(lane, CREATE, {}, b"")
    assert status == 401
    assert counts.counts == {("POST", "/2010-04-01/Accounts/<account_sid>/Messages.json", "401"): 1}


async def test_a_client_gone_before_its_body_gets_no_answer_and_nothing_is_stored(daemon) -> None:
    running, _ = daemon
    lane = FastLane(_refuse, running.routes, running.directory, max_request_bytes=MAX_REQUEST_BYTES)
    sent: list[Any] = []
    before = running.store.count(b"by_account", ACCOUNT.encode() + b"\x00")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": CREATE,
        "headers": [(b"authorization", BASIC.encode())],
    }
    await lane(scope, receive, send)
    assert sent == []
    assert running.store.count(b"by_account", ACCOUNT.encode() + b"\x00") == before


async def _refuse(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError(f"the fast lane passed {scope.get('method')} {scope.get('path')} on")


def test_sids_are_unique_random_hex_across_pool_refills_and_forks() -> None:
    import os

    from dispatcher.core.models import new_sid

    sids = [new_sid("SM", 7) for _ in range(5000)]  # several 1,024-sid draws
    assert len(set(sids)) == len(sids)
    assert all(len(s) == 34 and s.startswith("SM") and int(s[2:], 16) >= 0 for s in sids)
    assert new_sid("MM", 7).startswith("MM")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_sid("SM", 7).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != new_sid("SM", 7) and child not in sids


HOOK = "/webhooks/onprem/{digits}/{secret}"
WEBHOOK_CASES: list[tuple[str, bytes]] = [
    ("wrong-secret", b'{"statuses": []}'),
    ("hook-1-secret-0123", b'{"statuses": [{"id": "wamid.x"}]}'),  # no status: malformed
    ("hook-1-secret-0123", b"not json"),
    (
        "hook-1-secret-0123",
        b'{"statuses": [{"id": "wamid.unknown", "status": "delivered", "timestamp": "1"}]}',
    ),
    ("hook-1-secret-0123", b'{"statuses": []}'),
]


@pytest.mark.parametrize("case", range(len(WEBHOOK_CASES)))
async def test_onprem_webhooks_answer_as_quart_does_and_are_counted(daemon, case: int) -> None:
    running, _ = daemon
    secret, body = WEBHOOK_CASES[case]
    path = HOOK.format(digits=NUMBERS[0].lstrip("+"), secret=secret)
    headers = {"Content-Type": "application/json"}
    counts = RequestCounts()
    lane = FastLane(
        _refuse, running.routes, running.directory, max_request_bytes=MAX_REQUEST_BYTES, requests=counts
    )
    expected = await asgi_post(running.quart_app, path, headers, body)
    got = await asgi_post(lane, path, headers, body)
    assert got == expected
    assert counts.counts == {("POST", "/webhooks/onprem/<digits>/<secret>", str(expected[0])): 1}
