"""Inbound media through the front door: streamed, bounded, limited in number and time (issue 12).

A real daemon serves one On-Prem number whose endpoint is a server of this file
on 127.0.0.1: it logs the number in and answers each media id the way the test
chose (a file, a huge Content-Length, endless chunks, nothing at all). The
customer's message reaches the daemon as a real webhook POST; the media is
then fetched through the Twilio-style Media URL, as a client would.
"""

from __future__ import annotations

import gc
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import h11
import httpx
import msgspec
import pytest
import trio

from actors.transport import BodyStream, Response
from dispatcher import config as configuration
from dispatcher.core.models import StoredMedia
from dispatcher.frontdoor.cloud_routes import signature
from dispatcher.messages.inbound_media import MAX_BYTES, DownloadSlots, Relay, limit_for
from dispatcher.service.daemon import Running
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon
from tests.helpers.http_servers import (
    Server,
    read_request,
    send_flood,
    start_server,
    url,
    wait_for_close,
)
from tests.helpers.messages import wait_status

NUMBER = "+15550000009"
CUSTOMER = "15551234567"
UUID = "d674171b-b912-4d76-9118-e2d571e16f33"  # an On-Prem media id (reference 1.6)
HOOK_SECRET = "upstream-hook-secret-0123456789abcdef"
SOCKET_SLACK = 32 << 20
LOGIN = b'{"users":[{"token":"media-test-token","expires_after":"2099-01-01 00:00:00+00:00"}]}'
SENT = b'{"messages":[{"id":"gBGGeZRAZ1NvAgn4gdjDH8IpKyM"}]}'
CHUNK = b"m" * 65536
CHUNKED = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"

Answer = Callable[[trio.abc.Stream], Awaitable[None]]


def whole(data: bytes, ctype: bytes = b"application/octet-stream") -> Answer:
    async def answer(stream: trio.abc.Stream) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (ctype, len(data))
        await stream.send_all(head + data)
        await wait_for_close(stream)

    return answer


def chunked(data: bytes) -> Answer:
    async def answer(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(data), 65536):
            piece = data[i : i + 65536]
            await stream.send_all(b"%x\r\n" % len(piece) + piece + b"\r\n")
        await stream.send_all(b"0\r\n\r\n")
        await wait_for_close(stream)

    return answer


def head_only(head: bytes) -> Answer:
    async def answer(stream: trio.abc.Stream) -> None:
        await stream.send_all(head)
        await wait_for_close(stream)

    return answer


@attrs.define
class FakeOnPrem:
    """The number's API: logins, and each media id answered as the test chose."""

    answers: dict[str, Answer] = attrs.field(factory=dict)
    server: Server | None = None

    @property
    def media_targets(self) -> list[bytes]:
        assert self.server is not None
        return [r.target for r in self.server.requests if r.target.startswith(b"/v1/media/")]

    async def handle(self, stream: trio.abc.Stream, server: Server) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            seen = await read_request(stream, conn)
            if seen is None:
                return
            server.requests.append(seen)
            server.notify()
            answer_json = {b"/v1/users/login": (200, LOGIN), b"/v1/messages": (201, SENT)}.get(seen.target)
            if answer_json is not None:
                status, body = answer_json
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                await stream.send_all((out or b"") + (conn.send(h11.Data(data=body)) or b""))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
                continue
            media_id = urllib.parse.unquote(seen.target.decode().removeprefix("/v1/media/"))
            answer = self.answers.get(media_id)
            if answer is None:
                await stream.send_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await wait_for_close(stream)
            else:
                await answer(stream)
            return


def daemon_config(
    data_dir: Path, endpoint: str, media: str = "", number_extra: str = ""
) -> configuration.Config:
    return configuration.loads(f"""
[server]
listen = "127.0.0.1:0"
graceful_timeout = 1.0
drain_timeout = 2.0
[store]
data_dir = "{data_dir}"
map_size_mb = 64
[media]
{media}
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
[[numbers]]
number = "{NUMBER}"
account = "{ACCOUNT}"
endpoints = ["{endpoint}"]
password = {{ value = "Upstream-Media-Passw0rd-9" }}
webhook_secret = {{ value = "{HOOK_SECRET}" }}
enforce_window = false
{number_extra}
""")


@asynccontextmanager
async def media_daemon(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeOnPrem, media: str = ""
) -> AsyncIterator[tuple[Running, httpx.AsyncClient]]:
    fake.server = await start_server(nursery, fake.handle)
    async with running_daemon(daemon_config(tmp_path / "d", url(fake.server), media)) as running:
        yield running


async def receive_media(
    client: httpx.AsyncClient, media_id: str, mime_type: str, n: int, kind: str = "document"
) -> str:
    """Post the customer's ``n``-th media message as the number's API would; returns its Media URL."""
    hook = {
        "contacts": [{"profile": {"name": "Jane"}, "wa_id": CUSTOMER}],
        "messages": [
            {
                "from": CUSTOMER,
                "id": f"ABGGmedia{n}",
                "timestamp": "1700000000",
                "type": kind,
                kind: {"id": media_id, "mime_type": mime_type, "sha256": "00", "caption": f"f{n}"},
            }
        ],
    }
    resp = await client.post(f"/webhooks/onprem/{NUMBER.lstrip('+')}/{HOOK_SECRET}", json=hook)
    assert resp.status_code == 200, resp.text
    page = (await client.get(messages_path(), params={"PageSize": 50})).json()
    inbound = [m for m in page["messages"] if m["direction"] == "inbound"]
    record = next(m for m in inbound if m["body"] == f"f{n}")
    listing = (await client.get(record["subresource_uris"]["media"])).json()
    uri: str = listing["media_list"][0]["uri"]
    return uri.removesuffix(".json")


# -- limits by kind -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "limit"),
    [
        ("audio", 16 << 20),
        ("voice", 16 << 20),  # an On-Prem voice note is an audio message
        ("video", 16 << 20),
        ("image", 5 << 20),
        ("sticker", 512 * 1024),
        ("document", 100 << 20),  # any type may come as a document: a 20 MB JPEG too
        ("", 100 << 20),  # a record stored before kinds were kept: never refuse a document
    ],
)
def test_the_limit_follows_the_message_kind(kind: str, limit: int) -> None:
    assert limit_for(kind) == limit


def test_metas_limits() -> None:
    mib = 1 << 20
    assert {
        "audio": 16 * mib,
        "video": 16 * mib,
        "image": 5 * mib,
        "sticker": 512 * 1024,
        "document": 100 * mib,
    } == MAX_BYTES


def test_download_slots_count_per_number_and_in_all() -> None:
    slots = DownloadSlots(per_number=2, total=3)
    a1, a2 = slots.take("+1"), slots.take("+1")
    assert a1 is not None and a2 is not None
    assert slots.take("+1") is None  # the number's limit
    b1 = slots.take("+2")
    assert b1 is not None
    assert slots.take("+3") is None  # the total
    a1.release()
    a1.release()  # idempotent: one slot back, not two
    assert (slots.running, slots.running_for("+1")) == (2, 1)
    assert slots.take("+3") is not None
    assert slots.take("+3") is None


# -- through the front door ---------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_media_is_relayed_whole(nursery: trio.Nursery, tmp_path: Path, framing: str) -> None:
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB, above the 1 MiB cap of API answers
    fake = FakeOnPrem(
        {"d674171b-b912-4d76-9118-e2d571e16f33": whole(data) if framing != "chunked" else chunked(data)}
    )
    with trio.fail_after(30):
        async with media_daemon(nursery, tmp_path, fake) as (_, client):
            media_url = await receive_media(
                client, "d674171b-b912-4d76-9118-e2d571e16f33", "application/pdf", 1
            )
            got = await client.get(media_url)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "application/pdf"
    if framing == "content-length":
        assert got.headers["content-length"] == str(len(data))
    assert fake.media_targets == [b"/v1/media/" + UUID.encode()]


async def test_a_content_length_above_the_kinds_limit_is_refused_unread(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sent: list[int] = []
    fake = FakeOnPrem(
        {
            "big-image": lambda s: send_flood(
                s, b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (10 << 30), CHUNK, sent
            ),
        }
    )
    with trio.fail_after(30):
        async with media_daemon(nursery, tmp_path, fake) as (_, client):
            media_url = await receive_media(client, "big-image", "image/jpeg", 1, kind="image")
            got = await client.get(media_url)
            assert fake.server is not None
            await fake.server.wait_for(lambda s: len(sent) == 1)
    assert got.status_code == 502
    assert got.json()["code"] == 20500
    assert str(5 << 20) in got.json()["message"]
    assert sent[0] < SOCKET_SLACK  # refused on the head: nothing of the 10 GiB was read


async def test_an_endless_body_is_cut_at_the_kinds_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    sent: list[int] = []
    fake = FakeOnPrem(
        {
            "endless-voice": lambda s: send_flood(
                s, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", CHUNKED, sent
            ),
            "after": whole(b"fine"),
        }
    )
    with trio.fail_after(60):
        async with media_daemon(nursery, tmp_path, fake, media="per_number = 1") as (_, client):
            media_url = await receive_media(client, "endless-voice", "audio/ogg", 1, kind="voice")
            received = 0
            with pytest.raises(httpx.HTTPError):  # the answer is aborted: never a complete-looking file
                async with client.stream("GET", media_url) as resp:
                    assert resp.status_code == 200
                    async for piece in resp.aiter_raw():
                        received += len(piece)
            assert fake.server is not None
            await fake.server.wait_for(lambda s: len(sent) == 1)
            # The slot came back (per_number = 1): the next download runs.
            after = await client.get(await receive_media(client, "after", "text/plain", 2))
    assert received <= 16 << 20
    assert sent[0] < (16 << 20) + SOCKET_SLACK
    assert after.status_code == 200 and after.content == b"fine"


async def test_downloads_beyond_the_numbers_limit_are_refused_at_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOnPrem(
        {
            "slow": head_only(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst"),
            "next": whole(b"next"),
        }
    )
    with trio.fail_after(30):
        async with media_daemon(nursery, tmp_path, fake, media="per_number = 1") as (_, client):
            slow_url = await receive_media(client, "slow", "application/pdf", 1)
            next_url = await receive_media(client, "next", "application/pdf", 2)
            async with client.stream("GET", slow_url) as slow:
                assert slow.status_code == 200
                refused = await client.get(next_url)
            # The client hung up on the slow one: its slot is released.
            assert fake.server is not None
            await fake.server.wait_for(lambda s: s.closed >= 1)
            allowed = await client.get(next_url)
    assert refused.status_code == 429
    assert refused.json()["code"] == 20429
    assert allowed.status_code == 200 and allowed.content == b"next"


async def test_a_download_holds_no_send_connection(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A number with one send connection (max_in_flight = 1) still sends while a download hangs."""
    fake = FakeOnPrem({"hangs": head_only(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nsome")})
    with trio.fail_after(30):
        fake.server = await start_server(nursery, fake.handle)
        config = daemon_config(tmp_path / "d", url(fake.server), number_extra="max_in_flight = 1")
        async with running_daemon(config) as (_, client):
            media_url = await receive_media(client, "hangs", "application/pdf", 1)
            async with client.stream("GET", media_url) as download:
                assert download.status_code == 200
                created = await client.post(
                    messages_path(),
                    data={"From": f"whatsapp:{NUMBER}", "To": f"whatsapp:+{CUSTOMER}", "Body": "hi"},
                )
                assert created.status_code == 201, created.text
                await wait_status(client, created.json()["sid"], "sent")
    assert b"/v1/messages" in fake.server.targets


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(wait_for_close, id="no-answer"),
        pytest.param(head_only(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nsome"), id="stalls-mid-body"),
    ],
)
async def test_a_download_past_its_deadline(nursery: trio.Nursery, tmp_path: Path, answer: Answer) -> None:
    fake = FakeOnPrem({"slow": answer})
    with trio.fail_after(30):
        async with media_daemon(nursery, tmp_path, fake, media="deadline = 0.5") as (_, client):
            media_url = await receive_media(client, "slow", "video/mp4", 1)
            began = trio.current_time()
            if answer is wait_for_close:
                got = await client.get(media_url)
                assert got.status_code == 504
                assert got.json()["code"] == 20504
            else:  # the head came in time: the answer started, and is aborted at the deadline
                with pytest.raises(httpx.HTTPError):
                    async with client.stream("GET", media_url) as resp:
                        assert resp.status_code == 200
                        await resp.aread()
            took = trio.current_time() - began
            assert fake.server is not None
            await fake.server.wait_for(lambda s: s.closed >= 1)  # the upstream connection is closed
    assert took < 5.0


@pytest.mark.parametrize(
    "media_id",
    [
        "../../v1/settings/application?x=",  # the traversal with a query
        "..",
        "a/../../v1/settings/application",
        "%2e%2e%2fv1%2fsettings%2fapplication",  # percent-encoded traversal
        "abc?token=1",
        "abc#frag",
        "１２３４",  # fullwidth digits  # noqa: RUF001
        "d674171b\u2215b912",  # a division slash, not a slash
    ],
)
async def test_an_invalid_media_id_is_never_put_into_a_path(
    nursery: trio.Nursery, tmp_path: Path, media_id: str
) -> None:
    fake = FakeOnPrem()
    with trio.fail_after(30):
        async with media_daemon(nursery, tmp_path, fake) as (_, client):
            media_url = await receive_media(client, media_id, "image/jpeg", 1)
            got = await client.get(media_url)
    assert got.status_code == 404
    assert got.json()["code"] == 20404
    assert fake.media_targets == []  # nothing was asked of the number's API


# -- Cloud: metadata first, then the file from the URL it names ---------------------------------------

CLOUD = "+15550000010"
PNID = "106540352242922"
CLOUD_TOKEN = "EAAupstream-media-test-token"
APP_SECRET = "upstream-app-secret-0123456789"


@attrs.define
class FakeGraph:
    """Graph for one number: ``GET /v23.0/{media-id}`` answers the metadata the test set, and
    the file paths it names answer as the test chose."""

    metadata: dict[str, bytes] = attrs.field(factory=dict)
    files: dict[bytes, Answer] = attrs.field(factory=dict)
    server: Server | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return url(self.server)

    async def handle(self, stream: trio.abc.Stream, server: Server) -> None:
        conn = h11.Connection(h11.SERVER)
        seen = await read_request(stream, conn)
        if seen is None:
            return
        server.requests.append(seen)
        server.notify()
        if seen.target in self.files and seen.header(b"authorization") == b"Bearer " + CLOUD_TOKEN.encode():
            await self.files[seen.target](stream)
            return
        # Metadata and errors close the connection: this fake serves one request per connection.
        meta = self.metadata.get(seen.target.decode().removeprefix("/v23.0/"))
        if meta is None:
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        else:
            head = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
            await stream.send_all(head % len(meta) + meta)


def cloud_config(data_dir: Path, endpoint: str) -> configuration.Config:
    return configuration.loads(f"""
[server]
listen = "127.0.0.1:0"
[store]
data_dir = "{data_dir}"
map_size_mb = 64
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
[[numbers]]
number = "{CLOUD}"
account = "{ACCOUNT}"
channel = "cloud"
endpoints = ["{endpoint}"]
[numbers.cloud]
phone_number_id = "{PNID}"
access_token = {{ value = "{CLOUD_TOKEN}" }}
app_secret = {{ value = "{APP_SECRET}" }}
verify_token = {{ value = "upstream-verify-token-0123" }}
[watch]
check_at_start = false  # the fake Graph answers only what these tests ask (no start-up read of fields)
""")


async def receive_cloud_media(client: httpx.AsyncClient, media_id: str, n: int) -> str:
    """Post a signed Cloud webhook with the customer's document; returns its Media URL."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": CLOUD.lstrip("+"), "phone_number_id": PNID},
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": CUSTOMER}],
        "messages": [
            {
                "from": CUSTOMER,
                "id": f"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVC{n}",
                "timestamp": "1700000000",
                "type": "document",
                "document": {
                    "id": media_id,
                    "mime_type": "application/pdf",
                    "sha256": "00",
                    "filename": f"f{n}",
                },
            }
        ],
    }
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}],
        }
    ).encode()
    resp = await client.post(
        f"/webhooks/cloud/{CLOUD.lstrip('+')}",
        content=body,
        headers={"X-Hub-Signature-256": signature(APP_SECRET, body)},
    )
    assert resp.status_code == 200, resp.text
    page = (await client.get(messages_path(), params={"PageSize": 50})).json()
    record = next(m for m in page["messages"] if m["direction"] == "inbound" and m["body"] == f"f{n}")
    listing = (await client.get(record["subresource_uris"]["media"])).json()
    uri: str = listing["media_list"][0]["uri"]
    return uri.removesuffix(".json")


async def test_cloud_media_is_fetched_from_the_url_its_metadata_names(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data = b"%PDF-" + bytes(range(256)) * 8192  # 2 MiB
    graph = FakeGraph()
    graph.server = await start_server(nursery, graph.handle)
    graph.metadata["1037543291543636"] = json.dumps(
        {
            "messaging_product": "whatsapp",
            "url": f"{graph.base}/whatsapp_business/attachments/?mid=1037543291543636&ext=1700000000&hash=AT",
            "mime_type": "application/pdf",
            "sha256": "00",
            "file_size": len(data),
            "id": "1037543291543636",
        }
    ).encode()
    graph.files[b"/whatsapp_business/attachments/?mid=1037543291543636&ext=1700000000&hash=AT"] = whole(data)
    with trio.fail_after(30):
        async with running_daemon(cloud_config(tmp_path / "d", graph.base)) as (_, client):
            got = await client.get(await receive_cloud_media(client, "1037543291543636", 1))
            gone = await client.get(await receive_cloud_media(client, "2222", 2))  # Graph: 404
    assert got.status_code == 200 and got.content == data
    assert gone.status_code == 404
    assert graph.server.targets[:2] == [
        b"/v23.0/1037543291543636",
        b"/whatsapp_business/attachments/?mid=1037543291543636&ext=1700000000&hash=AT",
    ]


@pytest.mark.parametrize(
    "location",
    [
        "https://attacker.example.com/steal",  # the token must not go there
        "https://lookaside.fbsbx.com.attacker.example/x",
        "http://lookaside.fbsbx.com/x",  # Meta's host, but not over TLS
        "file:///etc/passwd",
        "not a url",
    ],
)
async def test_cloud_media_locations_elsewhere_are_never_fetched(
    nursery: trio.Nursery, tmp_path: Path, location: str
) -> None:
    graph = FakeGraph()
    graph.server = await start_server(nursery, graph.handle)
    graph.metadata["1037543291543636"] = json.dumps({"url": location, "id": "1037543291543636"}).encode()
    with trio.fail_after(30):
        async with running_daemon(cloud_config(tmp_path / "d", graph.base)) as (_, client):
            got = await client.get(await receive_cloud_media(client, "1037543291543636", 1))
    assert got.status_code == 502
    assert got.json()["code"] == 20500
    assert graph.server.targets == [b"/v23.0/1037543291543636"]


def test_a_relay_never_sent_releases_its_slot_when_collected() -> None:
    """The client left before the answer started: quart never enters the body, nothing leaks."""
    slots = DownloadSlots(per_number=1, total=1)
    slot = slots.take(NUMBER)
    assert slot is not None
    stream = BodyStream.whole(Response(200, [], b"data"), limit=10)
    relay = Relay(stream, slot, {"number": NUMBER, "sid": "MM1"})
    del relay
    gc.collect()
    assert stream.closed
    assert slots.running == 0


async def test_a_relay_closed_by_quart_releases_its_slot_once() -> None:
    slots = DownloadSlots(per_number=1, total=1)
    slot = slots.take(NUMBER)
    assert slot is not None
    relay = Relay(
        BodyStream.whole(Response(200, [], b"data"), limit=10), slot, {"number": NUMBER, "sid": "MM1"}
    )
    assert [piece async for piece in relay] == [b"data"]
    assert slots.running == 0  # released at the end of the body
    await relay.aclose()  # quart's __aexit__: idempotent
    assert slots.take(NUMBER) is not None and slots.running == 1


def test_records_stored_before_kinds_were_kept_still_decode() -> None:
    old = msgspec.msgpack.encode(["ME" + "a" * 32, "uuid-1", "image/jpeg"])  # StoredMedia of before
    media = msgspec.msgpack.decode(old, type=StoredMedia)
    assert (media.content_type, media.kind, limit_for(media.kind)) == ("image/jpeg", "", 100 << 20)
