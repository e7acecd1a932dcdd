"""The simulator emits every inbound type and any status path on demand (control API, sans-IO)."""

from __future__ import annotations

import base64
import json

import pytest
import trio

from dispatcher.channels.onprem_webhook import decode
from dispatcher.simulator import Simulator
from tests.helpers.simulator_core import NUMBER, Json, Recorder, body_of, number, request


@pytest.fixture
async def running(nursery: trio.Nursery) -> tuple[Simulator, Recorder]:
    hook = Recorder()
    sim = Simulator([number()], poster=hook, webhook_concurrency=1, status_delays=None)
    await nursery.start(sim.run)
    return sim, hook


async def control(sim: Simulator, route: str, payload: Json) -> tuple[int, Json]:
    resp = await sim.handle(request("POST", f"/_sim/{route}", payload))
    return resp.status, body_of(resp)


async def posted(hook: Recorder, count: int) -> list[bytes]:
    with trio.fail_after(5):
        while len(hook.posts) < count:  # noqa: ASYNC110 - the Recorder has no event
            await trio.sleep(0.001)
    return [json.dumps(payload).encode() for _, _, payload in hook.posts]


MEDIA = {"mime_type": "audio/ogg", "data": base64.b64encode(b"OggS....").decode()}
CASES: list[tuple[Json, str]] = [
    ({"body": "hi"}, "text"),
    ({"media": {**MEDIA, "mime_type": "image/jpeg", "caption": "c"}}, "image"),
    ({"media": MEDIA}, "audio"),
    ({"media": MEDIA, "type": "voice"}, "voice"),
    ({"media": {**MEDIA, "mime_type": "image/webp"}, "type": "sticker"}, "sticker"),
    ({"media": {**MEDIA, "mime_type": "application/pdf", "filename": "f.pdf"}}, "document"),
    ({"media": {**MEDIA, "mime_type": "video/mp4"}}, "video"),
    ({"location": {"latitude": 1.5, "longitude": -2.25, "name": "N"}}, "location"),
    ({"contacts": [{"name": {"formatted_name": "A B"}, "phones": [{"phone": "+1"}]}]}, "contacts"),
    ({"button": {"text": "Yes", "payload": "Y"}}, "button"),
    ({"interactive": {"type": "button_reply", "button_reply": {"id": "1", "title": "T"}}}, "interactive"),
    ({"interactive": {"type": "list_reply", "list_reply": {"id": "r", "title": "R"}}}, "interactive"),
    ({"body": "re", "context": {"id": "gBGGx", "from": "15550000001"}}, "text"),
]


@pytest.mark.parametrize(("payload", "kind"), CASES)
async def test_every_inbound_type_is_posted_in_the_real_shape(
    running: tuple[Simulator, Recorder], payload: Json, kind: str
) -> None:
    sim, hook = running
    status, answer = await control(sim, "inbound", {"number": NUMBER, "from": "15551230001", **payload})
    assert status == 201, answer
    [body] = await posted(hook, 1)
    message = json.loads(body)["messages"][0]
    assert message["type"] == kind and message["from"] == "15551230001"
    assert kind in message or kind == "text"
    # What the simulator posts, the daemon's decoder reads.
    [event] = decode(body).inbound
    assert event.kind == kind and event.sender == "+15551230001"
    if "media" in payload:
        assert answer["media_id"] == event.media[0].media_id


@pytest.mark.parametrize(
    "payload",
    [
        {"body": "a", "button": {"text": "t", "payload": "p"}},  # two objects
        {},  # none
        {"location": {"latitude": 100, "longitude": 0}},
        {"media": MEDIA, "type": "location"},
        {"interactive": {"type": "carousel_reply"}},
    ],
)
async def test_invalid_inbound_requests_are_400(running: tuple[Simulator, Recorder], payload: Json) -> None:
    sim, hook = running
    status, _ = await control(sim, "inbound", {"number": NUMBER, "from": "15551230001", **payload})
    assert status == 400
    assert hook.posts == []


async def test_any_status_path_on_demand(running: tuple[Simulator, Recorder]) -> None:
    sim, hook = running
    for status, extra in [
        ("read", {}),
        ("delivered", {}),
        ("failed", {"errors": [{"code": 410, "title": "Message expired"}]}),
        ("deleted", {}),
    ]:
        code, _ = await control(
            sim,
            "status",
            {"number": NUMBER, "id": "gBGG1", "status": status, "recipient_id": "15551230001", **extra},
        )
        assert code == 202
    bodies = await posted(hook, 4)
    assert [json.loads(b)["statuses"][0]["status"] for b in bodies] == [
        "read",
        "delivered",
        "failed",
        "deleted",
    ]
    events = [decode(b) for b in bodies]
    assert [e.statuses[0].status for e in events[:3]] == ["read", "delivered", "undelivered"]
    assert events[3].statuses == [] and events[3].ignored == 1
    # Any status name is posted (the platform adds some); only a malformed request is refused.
    assert (await control(sim, "status", {"number": NUMBER, "id": "x", "status": "x" * 33}))[0] == 400
    assert (await control(sim, "status", {"number": "+15559999999", "id": "x", "status": "read"}))[0] == 404
