"""Forwarding between daemons: a front door that owns some buckets (A), a peer owning another over
real HTTP (B, a keep-alive h11 server), and a bucket with no owner. What each request becomes is
read at both ends: what A's own front door received, what B received, what the client got."""

from __future__ import annotations

import base64
import functools
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import attrs
import msgspec
import pytest
import trio

from dispatcher.config import ServiceConfig
from dispatcher.core.bucketing import slot_of
from dispatcher.core.directory import CloudHook, NumberInfo
from dispatcher.core.models import new_sid
from dispatcher.frontdoor.forwarding import HOP_HEADER, Forwarder, PeerPool, add_metrics
from dispatcher.frontdoor.lane_server import serve_lane
from dispatcher.frontdoor.server import listen_socket
from dispatcher.messages.services import Services
from dispatcher.ops.metrics import DispatcherCollector, Metrics, RequestCounts
from dispatcher.ownership.interface import Owner
from tests.helpers.buckets import FixedOwners, open_buckets
from tests.helpers.http_servers import Reply, Seen, Server, h11_handler, start_server, url
from tests.helpers.intake import Intake, build_intake
from tests.helpers.metrics import parse, value

ACCOUNT: Final = "AC" + "0" * 31 + "1"
TOKEN: Final = "forwarding-token-0123"
AUTH: Final = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
# bucket_of(n, 4) == index: A owns 0 and 1, B owns 2, nobody 3.
SENDERS: Final = ("+15550000008", "+15550000001", "+15550000002", "+15550000003")
PNID: Final = "106540352242922"  # SENDERS[2] is a Cloud number
SERVICE: Final = "MG" + "0" * 31 + "1"
CREATE: Final = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
ADMIN_TOKEN: Final = "forwarding-admin-token-0123456789"
ADMIN_AUTH: Final = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}


@attrs.define
class Front:
    """What A's own front door (behind the forwarder) received."""

    seen: list[tuple[str, str, bytes]] = attrs.Factory(list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], scope["path"], body))
        status = 201
        if scope["path"] == "/v1/messages:batch":
            status, answer = 200, _batch_answer("A", json.loads(body))
        else:
            answer = json.dumps({"served_by": "A"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer, "more_body": False})


def _batch_answer(who: str, items: list[dict[str, Any]]) -> bytes:
    results: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if item.get("from") in SENDERS:
            results.append({"sid": f"{who}-{item['body']}-{i}", "status": "queued"})
        else:
            results.append(
                {"error": {"code": 63007, "message": "no such sender", "more_info": "", "status": 400}}
            )
    accepted = sum(1 for r in results if "sid" in r)
    return json.dumps(
        {"accepted": accepted, "rejected": len(results) - accepted, "results": results}
    ).encode()


async def peer_app(seen: Seen) -> Reply:
    if seen.target == b"/v1/messages:batch":
        body = _batch_answer("B", json.loads(seen.body))
        return Reply(200, [(b"content-type", b"application/json")], (body,))
    return Reply(
        201,
        [(b"content-type", b"application/json"), (b"x-peer", b"B"), (b"retry-after", b"7")],
        (json.dumps({"served_by": "B"}).encode(),),
    )


@attrs.define
class World:
    forwarder: Forwarder
    front: Front
    peer: Server
    owners: FixedOwners
    intake: Intake
    pool: PeerPool


@pytest.fixture
async def world(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[World]:
    async with open_buckets(tmp_path / "data", 4) as buckets:
        peer = await start_server(nursery, h11_handler(peer_app))
        owners = FixedOwners({0: Owner("A", "http://a.invalid", 1), 1: Owner("A", "http://a.invalid", 1)})
        owners.table[2] = Owner("B", url(peer), 3)
        owners.table[3] = None
        numbers = {n: NumberInfo(n, ACCOUNT, "s") for n in SENDERS}
        numbers[SENDERS[2]] = NumberInfo(
            SENDERS[2], ACCOUNT, "s", cloud=CloudHook(PNID, "app-secret", "verify")
        )
        intake = build_intake(
            buckets,
            numbers=numbers,
            accounts={ACCOUNT: TOKEN},
            wall=_Wall(),
            services=Services([ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=list(SENDERS))], buckets),
        )
        front = Front()
        pool = PeerPool(max_connections=4, request_timeout=5.0)
        forwarder = Forwarder(
            front,
            buckets=buckets,
            directory=intake.directory,
            owners=owners,
            rules=intake.rules,
            auth=intake.auth,
            pool=pool,
            max_request_bytes=1 << 20,
            admin_token=ADMIN_TOKEN,
        )
        try:
            yield World(forwarder, front, peer, owners, intake, pool)
        finally:
            await pool.aclose()


class _Wall:
    def now(self) -> float:
        return 1_800_000_000.0


async def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request straight into the ASGI app (the client side needs no socket here)."""
    given = {"authorization": AUTH, "content-type": "application/x-www-form-urlencoded"} | (headers or {})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in given.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    events = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with trio.fail_after(10):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def form(**fields: str) -> bytes:
    from urllib.parse import urlencode

    return urlencode(fields).encode()


async def test_a_create_for_a_peers_bucket_is_answered_by_the_peer_unchanged(world: World) -> None:
    body = form(To="whatsapp:+16505551234", From=f"whatsapp:{SENDERS[2]}", Body="hop")
    status, headers, answer = await call(world.forwarder, "POST", CREATE, body, {"idempotency-key": "k1"})
    assert (status, json.loads(answer)) == (201, {"served_by": "B"})
    assert headers[b"x-peer"] == b"B" and headers[b"retry-after"] == b"7"
    assert headers[b"content-length"] == str(len(answer)).encode()
    assert world.front.seen == []
    [seen] = world.peer.requests
    assert (seen.method, seen.target, seen.body) == (b"POST", CREATE.encode(), body)
    assert seen.header(b"authorization") == AUTH.encode() and seen.header(b"idempotency-key") == b"k1"
    assert seen.header(HOP_HEADER) == b"A"
    assert world.forwarder.statistics.forwarded == 1


async def test_a_create_for_an_owned_bucket_goes_on_to_this_front_door_with_its_body(world: World) -> None:
    for index in (0, 1):
        body = form(To="+16505551234", From=SENDERS[index], Body=f"here {index}")
        status, _, answer = await call(world.forwarder, "POST", CREATE, body)
        assert (status, json.loads(answer)) == (201, {"served_by": "A"})
        assert world.front.seen[-1] == ("POST", CREATE, body)
    assert world.peer.requests == []


async def test_a_json_create_and_a_service_create_find_their_senders_bucket(world: World) -> None:
    body = json.dumps({"To": "+16505551234", "From": SENDERS[2], "Body": "json"}).encode()
    status, _, _ = await call(world.forwarder, "POST", CREATE, body, {"content-type": "application/json"})
    assert status == 201 and len(world.peer.requests) == 1
    for i in range(12):  # the service's pick decides, as the rules would
        to = f"+1650555{i:04d}"
        sender = world.intake.rules.sender_of(ACCOUNT, to, None, SERVICE)
        assert sender is not None
        before = (len(world.front.seen), len(world.peer.requests))
        status, _, _ = await call(
            world.forwarder, "POST", CREATE, form(To=to, MessagingServiceSid=SERVICE, Body="s")
        )
        bucket = world.intake.buckets.index(sender)
        expected = {0: (1, 0), 1: (1, 0), 2: (0, 1), 3: (0, 0)}[bucket]
        assert (len(world.front.seen) - before[0], len(world.peer.requests) - before[1]) == expected
        assert status == (503 if bucket == 3 else 201)


async def test_a_create_for_an_unowned_bucket_is_503_with_retry_after_and_goes_nowhere(world: World) -> None:
    status, headers, answer = await call(
        world.forwarder, "POST", CREATE, form(To="+16505551234", From=SENDERS[3], Body="x")
    )
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert json.loads(answer)["code"] == 20503 and "bucket 3 has no owner" in json.loads(answer)["message"]
    assert world.front.seen == [] and world.peer.requests == []
    assert world.forwarder.statistics.unowned == 1


async def test_bad_credentials_are_refused_behind_before_any_body_is_read_or_sent(world: World) -> None:
    bad = "Basic " + base64.b64encode(f"{ACCOUNT}:wrong".encode()).decode()
    body = form(To="+16505551234", From=SENDERS[2], Body="x")
    status, _, _ = await call(world.forwarder, "POST", CREATE, body, {"authorization": bad})
    assert status == 201 and world.front.seen == [
        ("POST", CREATE, body)
    ]  # the stub answers; the real one 401s
    assert world.peer.requests == []


async def test_a_batch_is_split_by_bucket_and_its_results_put_back_in_order(world: World) -> None:
    items = [{"to": f"+1650555{i:04d}", "from": SENDERS[i % 4], "body": f"b{i}"} for i in range(10)] + [
        {"to": "+16505550000", "from": "+19995550000", "body": "nobody's"}
    ]
    status, _, answer = await call(
        world.forwarder,
        "POST",
        "/v1/messages:batch",
        json.dumps(items).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200
    result = json.loads(answer)
    kinds = []
    for i, item in enumerate(result["results"]):
        if "sid" in item:
            kinds.append(item["sid"].split("-")[0])
            assert item["sid"].split("-")[1] == items[i]["body"]
        else:
            kinds.append(str(item["error"]["code"]))
    assert kinds == ["A", "A", "B", "20503", "A", "A", "B", "20503", "A", "A", "63007"]
    assert (result["accepted"], result["rejected"]) == (8, 3)
    [(_, _, local)] = world.front.seen
    assert [i["body"] for i in json.loads(local)] == ["b0", "b1", "b4", "b5", "b8", "b9", "nobody's"]
    [remote] = world.peer.requests
    assert [i["body"] for i in json.loads(remote.body)] == ["b2", "b6"]
    assert remote.header(HOP_HEADER) == b"A"


async def test_a_batch_whose_peer_cannot_be_reached_fails_only_the_peers_items(world: World) -> None:
    world.owners.table[2] = Owner("B", "http://127.0.0.1:9", 3)  # discard port: refused
    items = [{"to": f"+1650555{i:04d}", "from": SENDERS[i % 3], "body": f"b{i}"} for i in range(6)]
    status, _, answer = await call(
        world.forwarder,
        "POST",
        "/v1/messages:batch",
        json.dumps(items).encode(),
        {"content-type": "application/json"},
    )
    result = json.loads(answer)
    assert status == 200 and (result["accepted"], result["rejected"]) == (4, 2)
    assert [r["error"]["code"] for r in result["results"] if "error" in r] == [20503, 20503]
    assert "nothing was applied" in result["results"][2]["error"]["message"]
    assert world.forwarder.statistics.failed == 1


async def test_a_batch_all_ours_goes_behind_whole_and_unread(world: World) -> None:
    items = [{"to": "+16505551234", "from": SENDERS[i % 2], "body": f"b{i}"} for i in range(4)]
    body = json.dumps(items).encode()
    status, _, answer = await call(
        world.forwarder, "POST", "/v1/messages:batch", body, {"content-type": "application/json"}
    )
    assert status == 200 and world.front.seen == [("POST", "/v1/messages:batch", body)]
    assert json.loads(answer)["accepted"] == 4


async def test_a_sid_names_the_daemon_that_fetches_updates_and_deletes_it(world: World) -> None:
    theirs = new_sid("SM", slot_of(SENDERS[2]))
    ours = new_sid("SM", slot_of(SENDERS[0]))
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{theirs}.json"
    assert (await call(world.forwarder, "GET", path, query=b"a=1"))[0] == 201
    assert (await call(world.forwarder, "POST", path, form(Status="canceled")))[0] == 201
    assert (await call(world.forwarder, "DELETE", path))[0] == 201
    media = f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{theirs}/Media/ME{'0' * 32}"
    assert (await call(world.forwarder, "GET", media))[0] == 201
    assert [(r.method, r.target) for r in world.peer.requests] == [
        (b"GET", path.encode() + b"?a=1"),
        (b"POST", path.encode()),
        (b"DELETE", path.encode()),
        (b"GET", media.encode()),
    ]
    assert world.peer.requests[1].body == form(Status="canceled")
    await call(world.forwarder, "GET", f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{ours}.json")
    assert world.front.seen[-1][1].endswith(f"{ours}.json")
    assert world.peer.accepts == 1  # one keep-alive connection for all of them


async def test_webhooks_go_to_the_owner_of_their_number(world: World) -> None:
    onprem = f"/webhooks/onprem/{SENDERS[2].lstrip('+')}/secret"
    cloud = f"/webhooks/cloud/{SENDERS[2].lstrip('+')}"  # the Cloud route names its number too
    await call(world.forwarder, "POST", onprem, b'{"statuses":[]}')
    await call(world.forwarder, "POST", cloud, b'{"entry":[]}', {"x-hub-signature-256": "sha256=00"})
    await call(world.forwarder, "GET", cloud, query=b"hub.mode=subscribe")  # the handshake: anyone
    await call(world.forwarder, "POST", f"/webhooks/onprem/{SENDERS[1].lstrip('+')}/secret", b"{}")
    assert [(r.target, r.body) for r in world.peer.requests] == [
        (onprem.encode(), b'{"statuses":[]}'),
        (cloud.encode(), b'{"entry":[]}'),
    ]
    assert world.peer.requests[1].header(b"x-hub-signature-256") == b"sha256=00"
    assert [(m, p) for m, p, _ in world.front.seen] == [
        ("GET", cloud),
        ("POST", f"/webhooks/onprem/{SENDERS[1].lstrip('+')}/secret"),
    ]


async def test_a_forwarded_request_is_never_forwarded_again(world: World) -> None:
    body = form(To="+16505551234", From=SENDERS[2], Body="looped")
    status, _, _ = await call(world.forwarder, "POST", CREATE, body, {HOP_HEADER.decode(): "C"})
    assert status == 201 and world.front.seen == [("POST", CREATE, body)] and world.peer.requests == []


async def test_everything_else_is_served_here(world: World) -> None:
    for method, path in [
        ("GET", CREATE),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("POST", "/admin/v1/reload"),
    ]:
        await call(world.forwarder, method, path)
    assert len(world.front.seen) == 4 and world.peer.requests == []


async def test_a_body_too_large_is_refused_before_anything_is_forwarded(world: World) -> None:
    body = form(To="+16505551234", From=SENDERS[2], Body="x" * (1 << 20))
    status, _, answer = await call(world.forwarder, "POST", CREATE, body)
    assert status == 413 and json.loads(answer)["code"] == 21617
    assert world.peer.requests == [] and world.front.seen == []


async def test_an_owner_that_stops_answering_gives_a_503_saying_it_may_have_stored(
    world: World, nursery: trio.Nursery
) -> None:
    async def drop(stream: trio.abc.Stream, server: Server) -> None:
        await stream.receive_some(65536)  # the request, then the connection closes: no answer

    silent = await start_server(nursery, drop)
    world.owners.table[2] = Owner("B", url(silent), 4)
    status, headers, answer = await call(
        world.forwarder, "POST", CREATE, form(To="+16505551234", From=SENDERS[2], Body="x")
    )
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "may have been applied: retry with the same Idempotency-Key" in json.loads(answer)["message"]
    assert msgspec.json.decode(answer)["code"] == 20503


async def test_the_forwarding_counters_are_on_metrics(world: World) -> None:
    collector = DispatcherCollector(actors=list, buckets=world.intake.buckets, requests=RequestCounts())
    add_metrics(collector, world.forwarder.statistics)
    await call(world.forwarder, "POST", CREATE, form(To="+16505551234", From=SENDERS[2], Body="x"))
    await call(world.forwarder, "POST", CREATE, form(To="+16505551234", From=SENDERS[3], Body="x"))
    samples = parse(Metrics(collector).render().decode())
    assert value(samples, "wadispatch_forward_forwarded_total") == 1
    assert value(samples, "wadispatch_forward_unowned_total") == 1
    assert value(samples, "wadispatch_forward_failed_total") == 0


async def test_an_onboarding_add_goes_to_the_owner_of_its_numbers_bucket(world: World) -> None:
    """Its record lives in the number's bucket, and the owner starts its actor."""
    body = json.dumps({"number": SENDERS[2].lstrip("+"), "waba": "102290129340398"}).encode()
    status, _, answer = await call(world.forwarder, "POST", "/admin/v1/numbers", body, ADMIN_AUTH)
    assert (status, json.loads(answer)) == (201, {"served_by": "B"})
    assert world.front.seen == []
    body = json.dumps({"number": f"whatsapp:{SENDERS[1]}", "waba": "1"}).encode()
    status, _, _ = await call(world.forwarder, "POST", "/admin/v1/numbers", body, ADMIN_AUTH)
    assert world.front.seen == [("POST", "/admin/v1/numbers", body)]  # ours: behind, body as it came


async def test_an_onboarding_add_without_the_admin_token_is_refused_behind_unread(world: World) -> None:
    body = json.dumps({"number": SENDERS[2]}).encode()
    for auth in ({}, {"authorization": "Bearer wrong-token-0123456789"}):
        await call(world.forwarder, "POST", "/admin/v1/numbers", body, {**ADMIN_AUTH, **auth} if auth else {})
    assert [(m, p, b) for m, p, b in world.front.seen] == [("POST", "/admin/v1/numbers", body)] * 2
    assert world.forwarder.statistics.forwarded == 0


async def test_an_onboarding_add_that_names_no_number_is_refused_behind_with_its_reason(world: World) -> None:
    for body in (b"{", b"[]", b'{"number": 5}', b'{"waba": "1"}'):
        await call(world.forwarder, "POST", "/admin/v1/numbers", body, ADMIN_AUTH)
    assert [b for _, _, b in world.front.seen] == [b"{", b"[]", b'{"number": 5}', b'{"waba": "1"}']
    assert world.forwarder.statistics.forwarded == 0


async def test_every_step_about_one_number_goes_to_its_owner(world: World) -> None:
    digits = SENDERS[2].lstrip("+")
    for method, path in (
        ("POST", f"/admin/v1/numbers/{digits}/verify"),
        ("POST", f"/admin/v1/numbers/{SENDERS[2]}/register"),
        ("GET", f"/admin/v1/numbers/{digits}/profile"),
        ("DELETE", f"/admin/v1/numbers/{digits}"),
        ("GET", f"/admin/v1/numbers/{digits}/outbox"),  # the number's actor runs at its owner
        ("POST", f"/admin/v1/numbers/{SENDERS[2]}/pause"),
        ("POST", f"/admin/v1/numbers/{digits}/resume"),
        ("POST", f"/admin/v1/numbers/{digits}/drain"),
        ("POST", f"/admin/v1/numbers/{digits}/token/refresh"),
    ):
        status, _, answer = await call(world.forwarder, method, path, b"{}", ADMIN_AUTH)
        assert (status, json.loads(answer)) == (201, {"served_by": "B"}), path
    status, _, _ = await call(
        world.forwarder, "POST", f"/admin/v1/numbers/{SENDERS[3]}/verify", b"{}", ADMIN_AUTH
    )
    assert status == 503  # bucket 3 has no owner: nothing applied anywhere
    await call(world.forwarder, "GET", "/admin/v1/numbers", b"", ADMIN_AUTH)  # the list: any daemon
    await call(world.forwarder, "GET", "/admin/v1/doctor", b"", ADMIN_AUTH)
    assert [p for _, p, _ in world.front.seen] == ["/admin/v1/numbers", "/admin/v1/doctor"]


# -- an owner with a lane: the forwarded request goes straight into its app ------------------------


@attrs.define
class LaneOwner:
    """B's app behind its lane (``serve_lane``): what it received, as ASGI scopes."""

    seen: list[tuple[str, str, bytes, list[tuple[bytes, bytes]]]] = attrs.Factory(list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        self.seen.append((scope["method"], scope["path"], body, scope["headers"]))
        if scope["path"] == "/v1/messages:batch":
            status, answer = 200, _batch_answer("L", json.loads(body))
        else:
            status, answer = 201, json.dumps({"served_by": "B over its lane"}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"keep-alive"), (b"x-peer", b"B")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer, "more_body": False})


async def _lane_owner(world: World, nursery: trio.Nursery) -> LaneOwner:
    app = LaneOwner()
    sock = listen_socket("127.0.0.1", 0)
    lane = await nursery.start(
        functools.partial(serve_lane, app, sock, trio.sleep_forever, max_request_bytes=1 << 20)
    )
    world.owners.table[2] = Owner("B", url(world.peer), 3, lane=lane)
    return app


async def test_a_create_for_a_peers_bucket_goes_over_its_lane_when_it_has_one(
    world: World, nursery: trio.Nursery
) -> None:
    owner = await _lane_owner(world, nursery)
    body = form(To="whatsapp:+16505551234", From=f"whatsapp:{SENDERS[2]}", Body="lane")
    status, headers, answer = await call(world.forwarder, "POST", CREATE, body, {"idempotency-key": "k2"})
    assert (status, json.loads(answer)) == (201, {"served_by": "B over its lane"})
    assert headers[b"x-peer"] == b"B" and b"connection" not in headers  # hop-by-hop stays behind
    assert headers[b"content-length"] == str(len(answer)).encode()
    [(method, path, got, sent_headers)] = owner.seen
    assert (method, path, got) == ("POST", CREATE, body)
    assert (b"authorization", AUTH.encode()) in sent_headers and (b"idempotency-key", b"k2") in sent_headers
    assert (HOP_HEADER, b"A") in sent_headers
    assert world.peer.requests == [] and world.front.seen == []  # not over HTTP, not here
    assert world.forwarder.statistics.forwarded == 1


async def test_a_batch_part_goes_over_the_lane(world: World, nursery: trio.Nursery) -> None:
    owner = await _lane_owner(world, nursery)
    items = [{"to": f"+1650555{i:04d}", "from": SENDERS[i % 3], "body": f"b{i}"} for i in range(6)]
    status, _, answer = await call(
        world.forwarder, "POST", "/v1/messages:batch", json.dumps(items).encode(),
        {"content-type": "application/json"},
    )  # fmt: skip
    result = json.loads(answer)
    assert status == 200 and [r["sid"].split("-")[0] for r in result["results"]] == list("AALAAL")
    [(_, _, part, _)] = owner.seen
    assert [i["body"] for i in json.loads(part)] == ["b2", "b5"]


async def test_a_lane_nobody_listens_on_is_a_503_saying_nothing_was_applied(world: World) -> None:
    with socket.socket() as bound:  # bound, never listening: refused
        bound.bind(("127.0.0.1", 0))
        world.owners.table[2] = Owner(
            "B", url(world.peer), 3, lane=f"lane://127.0.0.1:{bound.getsockname()[1]}"
        )
        status, headers, answer = await call(
            world.forwarder, "POST", CREATE, form(To="+16505551234", From=SENDERS[2], Body="x")
        )
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "nothing was applied: retry shortly" in json.loads(answer)["message"]
    assert world.peer.requests == [] and world.forwarder.statistics.failed == 1


async def test_a_lane_lost_after_the_request_left_is_a_503_saying_it_may_have_been_applied(
    world: World, nursery: trio.Nursery
) -> None:
    async def drop(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # the preface and the request, then closed: no answer
        await stream.aclose()

    [listener] = await nursery.start(functools.partial(trio.serve_tcp, drop, 0, host="127.0.0.1"))
    lane = f"lane://127.0.0.1:{listener.socket.getsockname()[1]}"
    world.owners.table[2] = Owner("B", url(world.peer), 3, lane=lane)
    status, _, answer = await call(
        world.forwarder, "POST", CREATE, form(To="+16505551234", From=SENDERS[2], Body="x")
    )
    assert status == 503
    assert "may have been applied: retry with the same Idempotency-Key" in json.loads(answer)["message"]
