"""The sans-IO simulator under MockClock: auth, messages, rate limit, webhooks, counters, control API."""

from __future__ import annotations

import base64
import json
import re

import msgspec
import pytest
import trio
import trio.testing

from actors.transport import ConnectError
from dispatcher.core.clock import SystemWallClock
from dispatcher.simulator import InProcessTransport, SimNumber, SimRequest, SimResponse, Simulator
from tests.helpers.simulator_core import NUMBER, Json, Recorder, body_of, number, request

PREFIX = "/15550000001"
BASIC = "Basic " + base64.b64encode(b"admin:s3cret").decode()
TEXT = {"to": "+15551230001", "type": "text", "text": {"body": "hello"}}


def error_code(resp: SimResponse) -> int:
    errors = body_of(resp)["errors"]
    assert isinstance(errors, list)
    code: int = errors[0]["code"]
    return code


async def login(sim: Simulator, auth: str = BASIC) -> str:
    resp = await sim.handle(SimRequest("POST", f"{PREFIX}/v1/users/login", {"authorization": auth}))
    assert resp.status == 200, resp.body
    users = body_of(resp)["users"]
    assert isinstance(users, list)
    token: str = users[0]["token"]
    return token


async def send(sim: Simulator, token: str, payload: object = TEXT) -> SimResponse:
    return await sim.handle(request("POST", f"{PREFIX}/v1/messages", payload, token=token))


@pytest.fixture
def hook() -> Recorder:
    return Recorder()


@pytest.fixture
async def sim(hook: Recorder) -> Simulator:
    return Simulator([number(rate=1000.0, burst=1000)], poster=hook, webhook_concurrency=1)


@pytest.fixture
async def running(sim: Simulator, nursery: trio.Nursery) -> Simulator:
    await nursery.start(sim.run)
    return sim


# ---------------------------------------------------------------- users


async def test_login_returns_a_7_day_jwt_like_token(sim: Simulator) -> None:
    resp = await sim.handle(SimRequest("POST", f"{PREFIX}/v1/users/login", {"authorization": BASIC}))
    assert resp.status == 200
    payload = body_of(resp)
    assert payload["meta"] == {"api_status": "stable", "version": "v2.53.1"}
    [user] = payload["users"]
    header, claims, signature = user["token"].split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=="))
    assert decoded["user"] == "admin"
    assert decoded["exp"] - decoded["iat"] == 7 * 86_400
    assert signature
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", user["expires_after"])
    assert sim.counters(NUMBER).logins == 1


@pytest.mark.parametrize(
    "auth",
    [
        "Basic " + base64.b64encode(b"admin:wrong").decode(),
        "Basic " + base64.b64encode(b"root:s3cret").decode(),
        "Basic !!!not-base64",
        "Bearer x",
        "",
    ],
)
async def test_login_with_bad_credentials_is_401(sim: Simulator, auth: str) -> None:
    resp = await sim.handle(SimRequest("POST", f"{PREFIX}/v1/users/login", {"authorization": auth}))
    assert resp.status == 401
    assert error_code(resp) == 1005
    assert sim.counters(NUMBER).rejected_401 == 1
    assert sim.counters(NUMBER).logins == 0


async def test_first_login_can_set_a_new_password(sim: Simulator) -> None:
    resp = await sim.handle(
        SimRequest(
            "POST", f"{PREFIX}/v1/users/login", {"authorization": BASIC}, b'{"new_password":"N3w-pass!"}'
        )
    )
    assert resp.status == 200
    await login(sim, "Basic " + base64.b64encode(b"admin:N3w-pass!").decode())
    old = await sim.handle(SimRequest("POST", f"{PREFIX}/v1/users/login", {"authorization": BASIC}))
    assert old.status == 401


async def test_token_expires_after_seven_days(sim: Simulator, autojump_clock: trio.testing.MockClock) -> None:
    token = await login(sim)
    await trio.sleep(7 * 86_400 - 2)
    assert (await send(sim, token)).status == 201
    await trio.sleep(2)
    resp = await send(sim, token)
    assert resp.status == 401
    assert error_code(resp) == 1005
    assert sim.counters(NUMBER).rejected_401 == 1


async def test_advancing_the_wall_clock_expires_tokens(sim: Simulator) -> None:
    token = await login(sim)
    sim.advance_clock(7 * 86_400 - 5)
    assert (await send(sim, token)).status == 201
    sim.advance_clock(5)
    assert (await send(sim, token)).status == 401
    assert (await send(sim, await login(sim))).status == 201


async def test_only_a_trio_wall_clock_can_be_advanced() -> None:
    sim = Simulator([number()], wall_clock=SystemWallClock())
    with pytest.raises(TypeError):
        sim.advance_clock(1.0)


async def test_logout_revokes_only_that_token(sim: Simulator) -> None:
    first, second = await login(sim), await login(sim)
    resp = await sim.handle(request("POST", f"{PREFIX}/v1/users/logout", token=first))
    assert resp.status == 200
    assert body_of(resp) == {"meta": {"api_status": "stable", "version": "v2.53.1"}}
    assert (await send(sim, first)).status == 401
    assert (await send(sim, second)).status == 201


@pytest.mark.parametrize("token", [None, "", "eyJ.unknown.token"])
async def test_requests_without_a_valid_token_are_401(sim: Simulator, token: str | None) -> None:
    resp = await sim.handle(request("GET", f"{PREFIX}/v1/health", token=token))
    assert resp.status == 401
    assert error_code(resp) == 1005


async def test_tokens_belong_to_their_number(sim: Simulator) -> None:
    sim.add_number(number(number="+15550000002"))
    token = await login(sim)
    resp = await sim.handle(request("GET", "/15550000002/v1/health", token=token))
    assert resp.status == 401


async def test_health_reports_the_gateway_connected(sim: Simulator) -> None:
    resp = await sim.handle(request("GET", f"{PREFIX}/v1/health", token=await login(sim)))
    assert resp.status == 200
    assert body_of(resp) == {
        "health": {"gateway_status": "connected"},
        "meta": {"api_status": "stable", "version": "v2.53.1"},
    }


# ---------------------------------------------------------------- messages


async def test_send_returns_201_with_an_opaque_unique_id(sim: Simulator) -> None:
    token = await login(sim)
    ids = set()
    for _ in range(3):
        resp = await send(sim, token)
        assert resp.status == 201
        assert resp.header("Content-Type") == "application/json"
        payload = body_of(resp)
        assert payload["meta"] == {"api_status": "stable", "version": "v2.53.1"}
        [message] = payload["messages"]
        assert re.fullmatch(r"gBGG[A-Za-z0-9_-]{20}", message["id"])
        ids.add(message["id"])
    assert len(ids) == 3


VALID = [
    {"to": "15551230001", "type": "text", "preview_url": True, "text": {"body": "x" * 4096}},
    {"to": "15551230001", "type": "image", "image": {"link": "https://cdn.test/a.jpg", "caption": "c"}},
    {"to": "15551230001", "type": "audio", "audio": {"id": "f043afd0-f0ae-4b9c-ab3d-696fb4c8cd68"}},
    {"to": "15551230001", "type": "video", "video": {"id": "vid", "caption": "Demo"}},
    {
        "to": "15551230001",
        "type": "document",
        "document": {"link": "https://cdn.test/i.pdf", "filename": "i.pdf"},
    },
    {"to": "15551230001", "type": "sticker", "sticker": {"link": "https://cdn.test/s.webp"}},
    {"to": "15551230001", "type": "location", "location": {"latitude": -1.29, "longitude": 36.82}},
    {"to": "15551230001", "type": "contacts", "contacts": [{"name": {"formatted_name": "Ada"}}]},
    {
        "to": "15551230001",
        "type": "template",
        "template": {
            "namespace": "cdb2df51_9816_c754_c5a4_64cdabdcad3e",
            "name": "order_update",
            "language": {"policy": "deterministic", "code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}],
        },
    },
    {
        "to": "15551230001",
        "ttl": "P1D",
        "type": "hsm",
        "hsm": {
            "namespace": "ns",
            "element_name": "purchase",
            "language": {"policy": "fallback", "code": "en"},
            "localizable_params": [{"default": "$10"}],
        },
    },
    {
        "to": "15551230001",
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Yes?"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]},
        },
    },
]


@pytest.mark.parametrize("payload", VALID, ids=[str(p["type"]) for p in VALID])
async def test_every_message_type_is_accepted_and_recorded(sim: Simulator, payload: Json) -> None:
    resp = await send(sim, await login(sim), payload)
    assert resp.status == 201, resp.body
    [received] = sim.received(NUMBER)
    kind = payload["type"]
    assert (received.recipient, received.type) == ("15551230001", kind)
    if kind == "text":
        assert received.content == "x" * 4096
    elif kind == "contacts":
        assert received.content == {"contacts": payload["contacts"]}
    else:
        assert received.content == payload[str(kind)]


INVALID = [
    ("not json", b'{"to": ', 1025),
    ("array body", b"[]", 1009),
    ("missing to", {"type": "text", "text": {"body": "x"}}, 1008),
    ("to not digits", {"to": "+1555abc", "type": "text", "text": {"body": "x"}}, 1009),
    ("to too short", {"to": "123", "type": "text", "text": {"body": "x"}}, 1009),
    ("unknown type", {"to": "15551230001", "type": "fax", "fax": {}}, 1009),
    ("text object missing", {"to": "15551230001", "type": "text"}, 1008),
    ("empty text", {"to": "15551230001", "type": "text", "text": {"body": ""}}, 1008),
    ("text too long", {"to": "15551230001", "type": "text", "text": {"body": "x" * 4097}}, 1001),
    ("body not a string", {"to": "15551230001", "type": "text", "text": {"body": 5}}, 1009),
    ("image without id or link", {"to": "15551230001", "type": "image", "image": {"caption": "c"}}, 1008),
    ("image object missing", {"to": "15551230001", "type": "image", "text": {"body": "x"}}, 1008),
    (
        "template without language",
        {"to": "15551230001", "type": "template", "template": {"namespace": "n", "name": "t"}},
        1008,
    ),
    (
        "template bad policy",
        {
            "to": "15551230001",
            "type": "template",
            "template": {"namespace": "n", "name": "t", "language": {"policy": "x", "code": "en"}},
        },
        1009,
    ),
    (
        "location out of range",
        {"to": "15551230001", "type": "location", "location": {"latitude": 91, "longitude": 0}},
        1009,
    ),
    ("contacts empty", {"to": "15551230001", "type": "contacts", "contacts": []}, 1009),
    (
        "interactive button without body",
        {"to": "15551230001", "type": "interactive", "interactive": {"type": "button", "action": {}}},
        1008,
    ),
]


@pytest.mark.parametrize(("payload", "code"), [(p, c) for _, p, c in INVALID], ids=[i for i, _, _ in INVALID])
async def test_invalid_messages_are_400_with_the_real_code(
    sim: Simulator, payload: object, code: int
) -> None:
    resp = await send(sim, await login(sim), payload)
    assert resp.status == 400
    assert error_code(resp) == code
    assert body_of(resp)["meta"] == {"api_status": "stable", "version": "v2.53.1"}
    counters = sim.counters(NUMBER)
    assert (counters.rejected_400, counters.accepted) == (1, 0)
    assert sim.received(NUMBER) == []


async def test_rate_limit_allows_burst_then_rate_per_second(autojump_clock: trio.testing.MockClock) -> None:
    sim = Simulator([number(rate=10.0, burst=5)], status_delays=None)
    token = await login(sim)

    async def admitted(attempts: int) -> int:
        statuses = [(await send(sim, token)).status for _ in range(attempts)]
        assert set(statuses) <= {201, 429}
        return statuses.count(201)

    assert await admitted(8) == 5  # the burst, at once
    await trio.sleep(0.1)
    assert await admitted(3) == 1
    paced = 0
    for _ in range(100):  # 2 s of one attempt every 20 ms: rate/s get through
        await trio.sleep(0.02)
        paced += await admitted(1)
    assert paced == 20
    await trio.sleep(60.0)  # idle time refills the burst, not more
    assert await admitted(20) == 5
    refused = await send(sim, token)
    assert refused.status == 429
    assert error_code(refused) == 1015
    counters = sim.counters(NUMBER)
    assert (counters.accepted, counters.rejected_429) == (31, 3 + 2 + 80 + 15 + 1)


# ---------------------------------------------------------------- webhooks


async def test_statuses_are_posted_sent_delivered_read_at_their_delays(
    running: Simulator, hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    msg_id = body_of(await send(running, await login(running)))["messages"][0]["id"]
    await trio.sleep(1.0)
    assert [round(at - start, 6) for at, _, _ in hook.posts] == [0.0, 0.05, 0.1]
    assert {url for _, url, _ in hook.posts} == {"http://hook.test/wa"}
    statuses = hook.statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for status in statuses:
        assert status["id"] == msg_id
        assert status["recipient_id"] == "15551230001"
        assert re.fullmatch(r"\d{10}", str(status["timestamp"]))
        assert re.fullmatch(r"[0-9a-f]{32}", status["conversation"]["id"])
        assert status["pricing"] == {"billable": True, "pricing_model": "CBP"}
    assert running.counters(NUMBER).webhooks_sent == 3
    assert running.webhooks_pending == 0


async def test_a_message_keeps_its_conversation_across_a_utc_day(
    hook: Recorder, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The conversation a message opened is the one its later statuses name, even on the next day."""
    sim = Simulator([number(rate=1000.0, burst=1000)], poster=hook, status_delays=(0.0, 86_000.0, 172_000.0))
    await nursery.start(sim.run)
    await send(sim, await login(sim))
    for _ in range(3):
        await trio.sleep(60_000.0)  # two days and more, in steps under a day
    statuses = hook.statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert len({s["conversation"]["id"] for s in statuses}) == 1
    assert len({s["timestamp"] for s in statuses}) == 3


async def test_invalid_recipient_is_accepted_then_fails_with_1013(
    running: Simulator, hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    resp = await send(
        running, await login(running), {"to": "15559990001", "type": "text", "text": {"body": "x"}}
    )
    assert resp.status == 201
    await trio.sleep(1.0)
    [status] = hook.statuses()
    assert status["status"] == "failed"
    assert status["recipient_id"] == "15559990001"
    assert status["errors"] == [{"code": 1013, "title": "User is not valid"}]
    assert "conversation" not in status
    assert running.counters(NUMBER).accepted == 1


async def test_invalid_prefix_is_configurable(hook: Recorder, autojump_clock: trio.testing.MockClock) -> None:
    sim = Simulator([number()], poster=hook, invalid_prefix="1555123")
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        await send(sim, await login(sim))
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert [s["status"] for s in hook.statuses()] == ["failed"]


async def test_statuses_due_together_are_batched(
    hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    sim = Simulator([number(burst=100)], poster=hook, webhook_batch=50, webhook_concurrency=1)
    token = await login(sim)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        for i in range(100):
            assert (await send(sim, token, {"to": f"1555123{i:04d}", "text": {"body": "x"}})).status == 201
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    sizes = [len(payload["statuses"]) for _, _, payload in hook.posts]
    assert sizes == [50] * 6
    kinds = [{s["status"] for s in payload["statuses"]} for _, _, payload in hook.posts]
    assert kinds == [{"sent"}] * 2 + [{"delivered"}] * 2 + [{"read"}] * 2
    assert sim.counters(NUMBER).webhooks_sent == 6


async def test_one_status_per_post_by_default(hook: Recorder, autojump_clock: trio.testing.MockClock) -> None:
    sim = Simulator([number()], poster=hook)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        token = await login(sim)
        for _ in range(4):
            await send(sim, token)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert [len(payload["statuses"]) for _, _, payload in hook.posts] == [1] * 12
    # one recipient: its statuses arrive in order, message by message
    sequence = [s["status"] for s in hook.statuses()]
    assert sequence.count("sent") == 4
    assert sequence.index("read") > max(i for i, s in enumerate(sequence) if s == "sent")


async def test_a_stuck_webhook_receiver_never_slows_sends(autojump_clock: trio.testing.MockClock) -> None:
    release = trio.Event()

    async def stuck(url: str, body: bytes) -> int:
        await release.wait()
        return 200

    sim = Simulator(
        [number(burst=100)], poster=stuck, webhook_queue_size=10, webhook_timeout=1e9, webhook_concurrency=1
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        token = await login(sim)
        start = trio.current_time()
        statuses = [(await send(sim, token)).status for _ in range(30)]
        assert trio.current_time() == start
        assert statuses == [201] * 30
        assert sim.counters(NUMBER).webhooks_dropped == 20
        release.set()
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert sim.counters(NUMBER).webhooks_sent == 30  # 10 messages x 3 statuses


async def test_failed_posts_are_retried_with_backoff_then_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []
    outcomes = iter([500, 0, 200])  # 0: the poster raises

    async def flaky(url: str, body: bytes) -> int:
        attempts.append(trio.current_time())
        status = next(outcomes, 503)
        if status == 0:
            raise OSError("connection refused")
        return status

    sim = Simulator([number()], poster=flaky, status_delays=(0.0, 100.0, 100.0), webhook_retry_delay=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        start = trio.current_time()
        await send(sim, await login(sim))
        await trio.sleep(10.0)
        assert [round(t - start, 6) for t in attempts] == [0.0, 0.5, 1.5]
        assert sim.counters(NUMBER).webhooks_sent == 1
        await trio.sleep(100.0)  # "delivered": 503 four times (3 retries), then dropped
        nursery.cancel_scope.cancel()
    counters = sim.counters(NUMBER)
    assert (counters.webhooks_sent, counters.webhooks_failed) == (1, 2)  # "read" failed too
    assert len(attempts) == 3 + 4 + 4


async def test_no_status_webhooks_when_disabled(
    hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    sim = Simulator([number()], poster=hook, status_delays=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        await send(sim, await login(sim))
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert hook.posts == []


async def test_patch_settings_moves_the_webhook(
    running: Simulator, hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    token = await login(running)
    patch = {"webhooks": {"url": "http://other.test/hook"}}
    resp = await running.handle(request("PATCH", f"{PREFIX}/v1/settings/application", patch, token=token))
    assert resp.status == 200
    got = await running.handle(request("GET", f"{PREFIX}/v1/settings/application", token=token))
    assert body_of(got)["settings"] == {"application": {"webhooks": {"url": "http://other.test/hook"}}}
    await send(running, token)
    await trio.sleep(1.0)
    assert {url for _, url, _ in hook.posts} == {"http://other.test/hook"}
    bad = {"webhooks": {"url": "ftp://x"}}
    resp = await running.handle(request("PATCH", f"{PREFIX}/v1/settings/application", bad, token=token))
    assert (resp.status, error_code(resp)) == (400, 1009)


async def test_inbound_text_is_posted_in_the_flat_on_prem_shape(
    running: Simulator, hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    msg_id = running.inbound_text(NUMBER, "+15551230001", "Great!\nThanks", profile_name="Andre")
    await trio.sleep(0.1)
    [(_, url, payload)] = hook.posts
    assert url == "http://hook.test/wa"
    assert payload["contacts"] == [{"profile": {"name": "Andre"}, "wa_id": "15551230001"}]
    [message] = payload["messages"]
    assert message["from"] == "15551230001"
    assert message["id"] == msg_id
    assert message["id"].startswith("ABGG")
    assert message["type"] == "text"
    assert message["text"] == {"body": "Great!\nThanks"}
    assert re.fullmatch(r"\d{10}", message["timestamp"])


async def test_inbound_image_is_served_at_v1_media(
    running: Simulator, hook: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    data = b"\xff\xd8\xff fake jpeg"
    _, media_id = running.inbound_media(NUMBER, "15551230001", data, "image/jpeg", caption="receipt")
    await trio.sleep(0.1)
    [message] = hook.posts[0][2]["messages"]
    assert message["type"] == "image"
    assert message["image"]["id"] == media_id
    assert message["image"]["mime_type"] == "image/jpeg"
    assert message["image"]["caption"] == "receipt"
    assert re.fullmatch(r"[0-9a-f]{64}", message["image"]["sha256"])
    token = await login(running)
    resp = await running.handle(request("GET", f"{PREFIX}/v1/media/{media_id}", token=token))
    assert (resp.status, resp.body, resp.header("content-type")) == (200, data, "image/jpeg")
    missing = await running.handle(request("GET", f"{PREFIX}/v1/media/nope", token=token))
    assert (missing.status, error_code(missing)) == (404, 1006)
    anonymous = await running.handle(request("GET", f"{PREFIX}/v1/media/{media_id}"))
    assert anonymous.status == 401


async def test_inbound_needs_a_webhook_url() -> None:
    sim = Simulator([number(webhook_url=None)])
    with pytest.raises(LookupError):
        sim.inbound_text(NUMBER, "15551230001", "hi")


# ---------------------------------------------------------------- counters, numbers, routing


async def test_counters_and_received_keep_per_recipient_order(sim: Simulator) -> None:
    token = await login(sim)
    for i in range(6):
        recipient = "15551230001" if i % 2 == 0 else "15551230002"
        assert (await send(sim, token, {"to": recipient, "text": {"body": f"m{i}"}})).status == 201
    await send(sim, token, {"to": "15551230001"})
    await sim.handle(request("GET", f"{PREFIX}/v1/health"))
    counters = sim.counters(NUMBER)
    assert counters.accepted == 6
    assert counters.by_recipient == {"15551230001": 3, "15551230002": 3}
    assert (counters.rejected_400, counters.rejected_401, counters.logins) == (1, 1, 1)
    first = [r.content for r in sim.received(NUMBER) if r.recipient == "15551230001"]
    assert first == ["m0", "m2", "m4"]
    sim.reset()
    assert sim.counters(NUMBER) == type(counters)()
    assert sim.received(NUMBER) == []


async def test_received_is_bounded() -> None:
    sim = Simulator([number(burst=100)], received_limit=5, status_delays=None)
    token = await login(sim)
    for i in range(8):
        await send(sim, token, {"to": "15551230001", "text": {"body": str(i)}})
    assert [r.content for r in sim.received(NUMBER)] == ["3", "4", "5", "6", "7"]


async def test_numbers_are_added_and_removed_at_runtime(sim: Simulator) -> None:
    sim.add_number(number(number="+15550000002", password="other"))
    assert sim.endpoint_path("+15550000002") == "/15550000002"
    auth = "Basic " + base64.b64encode(b"admin:other").decode()
    resp = await sim.handle(SimRequest("POST", "/15550000002/v1/users/login", {"authorization": auth}))
    assert resp.status == 200
    with pytest.raises(ValueError, match="already simulated"):
        sim.add_number(number(number="+15550000002"))
    with pytest.raises(msgspec.ValidationError):
        sim.add_number(number(number="+15550000003", rate=0.0))
    with pytest.raises(msgspec.ValidationError):
        sim.add_number(SimNumber(number="15550000004", password="x"))
    sim.remove_number("+15550000002")
    gone = await sim.handle(SimRequest("POST", "/15550000002/v1/users/login", {"authorization": auth}))
    assert (gone.status, error_code(gone)) == (404, 1006)
    assert sim.numbers() == [NUMBER]


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/19999999999/v1/health", 404),
        ("GET", "/", 404),
        ("GET", f"{PREFIX}/v1/nothing", 404),
        ("GET", f"{PREFIX}/v1/messages", 405),
        ("DELETE", f"{PREFIX}/v1/media/x", 405),
    ],
)
async def test_unknown_routes(sim: Simulator, method: str, target: str, status: int) -> None:
    resp = await sim.handle(request(method, target))
    assert resp.status == status
    assert "errors" in body_of(resp)


async def test_contacts_check_marks_the_invalid_prefix(sim: Simulator) -> None:
    body = {"blocking": "wait", "contacts": ["+15551230001", "15559990001", "abc"]}
    resp = await sim.handle(request("POST", f"{PREFIX}/v1/contacts", body, token=await login(sim)))
    assert body_of(resp)["contacts"] == [
        {"input": "+15551230001", "status": "valid", "wa_id": "15551230001"},
        {"input": "15559990001", "status": "invalid"},
        {"input": "abc", "status": "invalid"},
    ]


async def test_uploaded_media_is_served_back(sim: Simulator) -> None:
    token = await login(sim)
    upload = SimRequest(
        "POST",
        f"{PREFIX}/v1/media",
        {"authorization": f"Bearer {token}", "content-type": "application/pdf"},
        b"%PDF-1.4",
    )
    resp = await sim.handle(upload)
    assert resp.status == 201
    media_id = body_of(resp)["media"][0]["id"]
    got = await sim.handle(request("GET", f"{PREFIX}/v1/media/{media_id}", token=token))
    assert (got.body, got.header("content-type")) == (b"%PDF-1.4", "application/pdf")


# ---------------------------------------------------------------- control API (sans-IO)


async def test_control_api(sim: Simulator, hook: Recorder, autojump_clock: trio.testing.MockClock) -> None:
    token = await login(sim)
    await send(sim, token)
    counters = body_of(await sim.handle(request("GET", "/_sim/counters")))
    assert counters["numbers"][NUMBER]["accepted"] == 1
    received = body_of(await sim.handle(request("GET", "/_sim/received?number=%2B15550000001")))
    assert received["number"] == NUMBER
    assert [(m["recipient"], m["type"], m["content"]) for m in received["messages"]] == [
        ("15551230001", "text", "hello")
    ]
    # an unencoded "+" in a query string decodes as a space: still found
    assert (await sim.handle(request("GET", "/_sim/received?number=+15550000001&limit=0"))).status == 200

    moved = await sim.handle(request("POST", "/_sim/clock", {"advance": 7 * 86_400}))
    assert moved.status == 200
    assert (await send(sim, token)).status == 401

    added = await sim.handle(request("POST", "/_sim/numbers", {"number": "+15550000009", "password": "p"}))
    assert (added.status, body_of(added)) == (201, {"number": "+15550000009", "endpoint": "/15550000009"})
    again = await sim.handle(request("POST", "/_sim/numbers", {"number": "+15550000009", "password": "p"}))
    assert again.status == 409

    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        inbound = {"number": NUMBER, "from": "15551230001", "body": "hi", "profile_name": "Ada"}
        assert (await sim.handle(request("POST", "/_sim/inbound", inbound))).status == 201
        media = {"mime_type": "image/png", "data": base64.b64encode(b"png").decode()}
        resp = await sim.handle(
            request("POST", "/_sim/inbound", {"number": NUMBER, "from": "1555", "media": media})
        )
        assert resp.status == 201
        assert body_of(resp)["media_id"]
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    texts = [p["messages"][0]["type"] for _, _, p in hook.posts if "messages" in p]
    assert texts == ["text", "image"]

    assert (await sim.handle(request("POST", "/_sim/reset"))).status == 200
    assert sim.counters(NUMBER).accepted == 0
    assert (await sim.handle(request("DELETE", "/_sim/numbers/15550000009"))).status == 200
    assert sim.numbers() == [NUMBER]


@pytest.mark.parametrize(
    ("method", "target", "body", "status"),
    [
        ("GET", "/_sim/received", b"", 400),
        ("GET", "/_sim/received?number=%2B19999", b"", 404),
        ("POST", "/_sim/clock", b'{"advance": -1}', 400),
        ("POST", "/_sim/inbound", b'{"number": "+15550000001", "from": "1"}', 400),
        ("POST", "/_sim/inbound", b'{"number": "+19990000001", "from": "1", "body": "x"}', 404),
        ("POST", "/_sim/numbers", b'{"number": "nope", "password": "p"}', 400),
        ("GET", "/_sim/nothing", b"", 404),
    ],
)
async def test_control_api_errors(sim: Simulator, method: str, target: str, body: bytes, status: int) -> None:
    resp = await sim.handle(SimRequest(method, target, {}, body))
    assert resp.status == status
    assert "errors" in body_of(resp)


# ---------------------------------------------------------------- in-process transport


async def test_in_process_transport_serves_the_actor_seam(sim: Simulator) -> None:
    transport = InProcessTransport(sim, NUMBER)
    login_resp = await transport.request(
        b"POST", b"/v1/users/login", [(b"Authorization", BASIC.encode())], b""
    )
    assert login_resp.status == 200
    token = json.loads(login_resp.body)["users"][0]["token"]
    resp = await transport.request(
        b"POST",
        b"/v1/messages",
        [(b"Authorization", f"Bearer {token}".encode()), (b"Content-Type", b"application/json")],
        json.dumps(TEXT).encode(),
    )
    assert resp.status == 201
    assert resp.header(b"content-type") == b"application/json"
    assert sim.counters(NUMBER).accepted == 1
    await transport.aclose()
    with pytest.raises(ConnectError):
        await transport.request(b"GET", b"/v1/health", [], b"")


async def test_in_process_transport_is_a_checkpoint(sim: Simulator) -> None:
    transport = InProcessTransport(sim, NUMBER)
    with trio.testing.assert_checkpoints():
        await transport.request(b"GET", b"/v1/health", [], b"")


async def test_the_per_sender_log_keeps_runs_of_sends_by_user_agent(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    token = await login(sim)

    async def send_as(agent: str) -> None:
        req = request("POST", f"{PREFIX}/v1/messages", TEXT, token=token)
        req.headers["user-agent"] = agent
        assert (await sim.handle(req)).status == 201
        await trio.sleep(1.0)

    for agent in ("gw (pid 1)", "gw (pid 1)", "gw (pid 2)", "gw (pid 1)"):
        await send_as(agent)
    runs = body_of(await sim.handle(request("GET", "/_sim/senders?number=%2B15550000001")))["runs"]
    assert [(r["agent"], r["count"]) for r in runs] == [
        ("gw (pid 1)", 2),
        ("gw (pid 2)", 1),
        ("gw (pid 1)", 1),
    ]
    assert runs[0]["last"] - runs[0]["first"] == 1.0
    assert runs[1]["first"] - runs[0]["last"] == 1.0
    assert (await sim.handle(request("GET", "/_sim/senders"))).status == 400
    await sim.handle(request("POST", "/_sim/reset"))
    assert body_of(await sim.handle(request("GET", "/_sim/senders?number=%2B15550000001")))["runs"] == []
