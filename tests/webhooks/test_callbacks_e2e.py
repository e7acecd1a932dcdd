"""End to end: simulator webhooks -> daemon -> durable callbacks -> a real customer endpoint.

Every callback the sink receives is checked with twilio-python's RequestValidator.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from structlog.testing import capture_logs

from dispatcher import config as configuration
from dispatcher.core import callbacks, ledger, window
from dispatcher.service.daemon import Running
from tests.helpers.callback_sink import FAST_CALLBACKS, Hit, Sink, open_sink
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon, sandbox_config
from tests.helpers.messages import create, wait_status

NUMBER = "+15550000001"
CUSTOMER = "+15551234567"


def config(
    data_dir: Path,
    sink: Sink | None = None,
    *,
    status_webhooks: bool = True,
    callbacks_extra: str = "",
    number_extra: str = "",
) -> configuration.Config:
    if sink is not None:
        number_extra += f'\ninbound_url = "{sink.url}/inbound"\n'
    return sandbox_config(
        data_dir,
        number_extra=number_extra,
        simulator_extra=f"status_webhooks = {'true' if status_webhooks else 'false'}",
        extra=FAST_CALLBACKS + callbacks_extra,
    )


def wamid(daemon: Running, sid: str) -> str:
    raw = daemon.store.get(b"messages", ledger.sid_key(sid))
    assert raw is not None
    channel_id = ledger.load(raw).channel_id
    assert channel_id is not None
    return channel_id


def queued_callbacks(daemon: Running) -> int:
    return daemon.store.count(callbacks.DB, b"")


async def sim_control(daemon: Running, route: str, payload: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=daemon.simulator_url or "", timeout=5.0) as sim:
        return await sim.post(f"/_sim/{route}", json=payload)


async def poll(done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for state held by the daemon (no event to wait on from the outside)."""
    with trio.fail_after(timeout):
        while not done():  # noqa: ASYNC110
            await trio.sleep(0.02)


def assert_signed(hits: list[Hit]) -> None:
    assert hits
    for hit in hits:
        assert hit.signed_by(TOKEN), hit
        assert hit.headers["content-type"] == "application/x-www-form-urlencoded"
        assert hit.headers["i-twilio-idempotency-token"]


# -- statuses -----------------------------------------------------------------------


async def test_status_callbacks_for_sent_delivered_read_are_signed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_sink() as sink, running_daemon(config(tmp_path / "d")) as (daemon, client):
            sid = await create(
                client, NUMBER, CUSTOMER, "hello", StatusCallback=sink.url + "/status?tenant=7"
            )
            await sink.wait_for(lambda s: len(s.delivered()) == 3)
            await wait_status(client, sid, "read")
            await trio.sleep(0.2)  # nothing more arrives
            assert len(sink.hits) == 3
            await poll(lambda: queued_callbacks(daemon) == 0)
            assert_signed(sink.hits)
            forms = [h.form for h in sink.hits]
            assert sorted(f["MessageStatus"] for f in forms) == ["delivered", "read", "sent"]
            for form in forms:
                assert form["MessageSid"] == form["SmsSid"] == sid
                assert form["SmsStatus"] == form["MessageStatus"]
                assert form["AccountSid"] == ACCOUNT
                assert (form["From"], form["To"]) == (f"whatsapp:{NUMBER}", f"whatsapp:{CUSTOMER}")
                assert form["ChannelToAddress"] == CUSTOMER and "ErrorCode" not in form


async def test_failed_delivery_reports_the_twilio_error_code(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_sink() as sink, running_daemon(config(tmp_path / "d")) as (_, client):
            sid = await create(
                client, NUMBER, "+15559990001", "hi", StatusCallback=sink.url + "/status"
            )  # not on WhatsApp
            await sink.wait_for(lambda s: any(h.form["MessageStatus"] == "failed" for h in s.hits))
            failed = next(h.form for h in sink.hits if h.form["MessageStatus"] == "failed")
            assert failed["MessageSid"] == sid and failed["ErrorCode"] == "63003"
            assert (await client.get(messages_path(sid))).json()["error_code"] == 63003
            assert_signed(sink.hits)


async def test_statuses_move_forward_only_whatever_order_they_arrive_in(tmp_path: Path) -> None:
    cfg = config(tmp_path / "d", status_webhooks=False)
    with trio.fail_after(30):
        async with open_sink() as sink, running_daemon(cfg) as (daemon, client):
            assert daemon.simulator is not None
            cb = sink.url + "/status"
            late, expired, incapable, deleted = [
                await create(client, NUMBER, CUSTOMER, f"m{i}", StatusCallback=cb) for i in range(4)
            ]
            for sid in (late, expired, incapable, deleted):
                await wait_status(client, sid, "sent")
            await sink.wait_for(lambda s: len(s.delivered()) == 4)  # the four "sent"

            def emit(sid: str, status: str, **kw: Any) -> None:
                assert daemon.simulator is not None
                daemon.simulator.emit_status(NUMBER, wamid(daemon, sid), status, recipient=CUSTOMER, **kw)  # type: ignore[arg-type]

            emit(late, "read")
            emit(late, "delivered")  # late: read already
            emit(late, "sent")
            emit(late, "failed", errors=[_error(1026, "Receiver Incapable")])  # after read: ignored
            emit(expired, "failed", errors=[_error(410, "Message expired")])
            emit(incapable, "delivered")
            emit(incapable, "failed", errors=[_error(1026, "Receiver Incapable")])
            emit(deleted, "deleted")
            await sink.wait_for(lambda s: len(s.delivered()) == 8)
            assert (await wait_status(client, late, "read"))["error_code"] is None
            assert (await wait_status(client, expired, "undelivered"))["error_code"] == 63021
            assert (await wait_status(client, incapable, "failed"))["error_code"] == 63024
            assert (await client.get(messages_path(deleted))).json()["status"] == "sent"
            await trio.sleep(0.3)
            by_sid: dict[str, list[str]] = {}
            for hit in sink.hits:
                by_sid.setdefault(hit.form["MessageSid"], []).append(hit.form["MessageStatus"])
            assert by_sid[late] == ["sent", "read"]
            assert by_sid[expired] == ["sent", "undelivered"]
            assert sorted(by_sid[incapable]) == ["delivered", "failed", "sent"]
            assert by_sid[deleted] == ["sent"]
            undelivered = next(h.form for h in sink.hits if h.form["MessageStatus"] == "undelivered")
            assert undelivered["ErrorCode"] == "63021" and undelivered["ErrorMessage"] == "Message expired"
            assert_signed(sink.hits)


def _error(code: int, title: str) -> Any:
    from dispatcher.simulator.wire import StatusError

    return StatusError(code=code, title=title)


# -- inbound ------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_every_inbound_type_becomes_a_message_and_a_signed_webhook(tmp_path: Path) -> None:
    media = {"mime_type": "image/png", "data": base64.b64encode(PNG).decode(), "caption": "see"}
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"body": "hello there"}, {"Body": "hello there", "NumMedia": "0", "MessageType": "text"}),
        ({"media": media}, {"Body": "see", "NumMedia": "1", "MediaContentType0": "image/png"}),
        ({"media": {**media, "mime_type": "video/mp4"}}, {"MessageType": "video", "NumMedia": "1"}),
        ({"media": {**media, "mime_type": "audio/ogg"}}, {"MessageType": "audio", "Body": ""}),
        ({"media": {**media, "mime_type": "audio/ogg"}, "type": "voice"}, {"MessageType": "voice"}),
        ({"media": {**media, "mime_type": "image/webp"}, "type": "sticker"}, {"MessageType": "sticker"}),
        (
            {"media": {**media, "mime_type": "application/pdf", "caption": None, "filename": "a.pdf"}},
            {"MessageType": "document", "Body": "a.pdf", "MediaContentType0": "application/pdf"},
        ),
        (
            {"location": {"latitude": 52.52, "longitude": 13.405, "name": "HQ", "address": "Main St 1"}},
            {"Latitude": "52.52", "Longitude": "13.405", "Label": "HQ", "Address": "Main St 1"},
        ),
        (
            {"contacts": [{"name": {"formatted_name": "Jane Roe"}, "phones": [{"phone": "+15550100"}]}]},
            {"MessageType": "contacts", "Body": "Jane Roe +15550100"},
        ),
        ({"button": {"text": "Yes", "payload": "YES"}}, {"ButtonText": "Yes", "ButtonPayload": "YES"}),
        (
            {"interactive": {"type": "button_reply", "button_reply": {"id": "b1", "title": "Later"}}},
            {"Body": "Later", "ButtonPayload": "b1", "MessageType": "interactive"},
        ),
        (
            {"interactive": {"type": "list_reply", "list_reply": {"id": "row-2", "title": "Blue"}}},
            {"Body": "Blue", "ListId": "row-2"},
        ),
    ]
    with trio.fail_after(30):
        async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
            for i, (payload, _) in enumerate(cases, 1):
                body = {"number": NUMBER, "from": CUSTOMER, "profile_name": "Jane", **payload}
                resp = await sim_control(daemon, "inbound", body)
                assert resp.status_code == 201, resp.text
                await sink.wait_for(lambda s, n=i: len(s.delivered()) >= n)
            assert_signed(sink.hits)
            assert len(sink.hits) == len(cases)
            for hit, (_, expected) in zip(sink.hits, cases, strict=True):
                form = hit.form
                assert hit.path == "/inbound"
                for key, value in expected.items():
                    assert form[key] == value, (key, form)
                assert form["From"] == f"whatsapp:{CUSTOMER}" and form["To"] == f"whatsapp:{NUMBER}"
                assert form["WaId"] == CUSTOMER.lstrip("+") and form["ProfileName"] == "Jane"
                assert form["SmsStatus"] == "received" and form["AccountSid"] == ACCOUNT
                sid = form["MessageSid"]
                assert sid[:2] == ("MM" if form["NumMedia"] != "0" else "SM")
                msg = (await client.get(messages_path(sid))).json()
                assert msg["direction"] == "inbound" and msg["status"] == "received"
                assert msg["from"] == f"whatsapp:{CUSTOMER}" and msg["body"] == form["Body"]
                assert msg["num_media"] == form["NumMedia"]
            # Media is served behind the account's auth, fetched from the number's API.
            url = sink.hits[1].form["MediaUrl0"]
            assert url.startswith(daemon.url + f"/2010-04-01/Accounts/{ACCOUNT}/Messages/MM")
            got = await client.get(url)
            assert got.status_code == 200 and got.content == PNG
            assert got.headers["content-type"] == "image/png"
            async with httpx.AsyncClient() as anonymous:
                assert (await anonymous.get(url)).status_code == 401
            assert (await client.get(url[:-4] + "0000")).status_code == 404
            listing = (await client.get(url.rsplit("/", 1)[0] + ".json")).json()
            assert [m["content_type"] for m in listing["media_list"]] == ["image/png"]
            # The 24 h window is open for this customer.
            assert window.last_inbound(daemon.store, NUMBER, CUSTOMER) is not None
            # Inbound messages are listed with the account's messages.
            page = (await client.get(messages_path(), params={"PageSize": 50})).json()
            assert sum(m["direction"] == "inbound" for m in page["messages"]) == len(cases)


async def test_a_redelivered_inbound_webhook_is_stored_once(tmp_path: Path) -> None:
    hook = {
        "contacts": [{"profile": {"name": "Jane"}, "wa_id": "15551234567"}],
        "messages": [
            {
                "from": "15551234567",
                "id": "ABGGdup1",
                "timestamp": "1700000000",
                "type": "text",
                "text": {"body": "once"},
            }
        ],
    }
    with trio.fail_after(30):
        async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
            url = f"{daemon.url}/webhooks/onprem/15550000001/hook-1-secret-0123"
            for _ in range(3):
                assert (await client.post(url, json=hook)).status_code == 200
            await sink.wait_for(lambda s: len(s.delivered()) == 1)
            await trio.sleep(0.2)
            assert len(sink.hits) == 1 and sink.hits[0].form["Body"] == "once"


async def test_twiml_reply_is_sent_back_to_the_customer(tmp_path: Path) -> None:
    async def echo(hit: Hit) -> tuple[int, bytes]:
        if hit.path != "/inbound":
            return 200, b""
        body = hit.form["Body"].replace("&", "&amp;").replace("<", "&lt;")
        return 200, f"<?xml version='1.0'?><Response><Message>Echo: {body}</Message></Response>".encode()

    with trio.fail_after(30):
        async with open_sink(respond=echo) as sink:
            cfg = config(tmp_path / "d", sink, number_extra=f'status_callback = "{sink.url}/status"')
            async with running_daemon(cfg) as (daemon, client):
                assert daemon.simulator is not None
                resp = await sim_control(
                    daemon, "inbound", {"number": NUMBER, "from": CUSTOMER, "body": "a<b"}
                )
                assert resp.status_code == 201
                await poll(lambda: bool(daemon.simulator and daemon.simulator.received(NUMBER)))
                [reply] = daemon.simulator.received(NUMBER)
                assert (reply.recipient, reply.content) == (CUSTOMER.lstrip("+"), "Echo: a<b")
                # The reply is a normal outbound message: listed, with its status callbacks.
                await sink.wait_for(lambda s: any(h.path == "/status" for h in s.hits))
                status = next(h.form for h in sink.hits if h.path == "/status")
                msg = (await client.get(messages_path(status["MessageSid"]))).json()
                assert msg["direction"] == "outbound-reply" and msg["body"] == "Echo: a<b"
                assert queued_callbacks(daemon) <= 2  # only later statuses may still be queued


async def test_twiml_media_reply_goes_out_as_media_and_a_private_media_url_is_dropped(
    tmp_path: Path,
) -> None:
    async def answer(hit: Hit) -> tuple[int, bytes]:
        if hit.path != "/inbound":
            return 200, b""
        return 200, (
            b"<Response><Message><Body>Your invoice</Body><Media>https://cdn.example.com/inv.pdf</Media>"
            b"<Media>https://cdn.example.com/logo.jpg</Media></Message>"
            b"<Message><Body>secret</Body><Media>http://169.254.169.254/latest/meta-data</Media></Message>"
            b"</Response>"
        )

    async def public_dns(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    with trio.fail_after(30):
        async with open_sink(respond=answer) as sink:
            cfg = config(tmp_path / "d", sink)
            with capture_logs() as logs:
                async with running_daemon(cfg, resolver=public_dns) as (daemon, client):
                    assert daemon.simulator is not None
                    resp = await sim_control(
                        daemon, "inbound", {"number": NUMBER, "from": CUSTOMER, "body": "invoice?"}
                    )
                    assert resp.status_code == 201
                    await poll(lambda: len(daemon.simulator.received(NUMBER)) >= 2)  # type: ignore[union-attr]
                    sent = daemon.simulator.received(NUMBER)
                    assert [r.type for r in sent] == ["document", "image"]
                    assert isinstance(sent[0].content, dict)
                    assert sent[0].content["link"] == "https://cdn.example.com/inv.pdf"
                    assert sent[0].content.get("caption") == "Your invoice"
                    listed = (await client.get(messages_path())).json()["messages"]
                    replies = [m for m in listed if m["direction"] == "outbound-reply"]
                    # The replies of one answer commit together: the refused one is not stored at all.
                    assert len(replies) == 1 and replies[0]["num_media"] == "2"
                    assert replies[0]["sid"].startswith("MM")
            ignored = [e for e in logs if e["event"] == "twiml.reply_ignored"]
            assert len(ignored) == 1 and ignored[0]["code"] == 21620


# -- durability and isolation ---------------------------------------------------------


async def test_pending_callbacks_survive_a_restart_and_arrive_exactly_once(tmp_path: Path) -> None:
    cfg = config(tmp_path / "d", status_webhooks=False, callbacks_extra="per_destination = 1\n")
    restarted = trio.Event()

    async def after_restart(_: Hit) -> tuple[int, bytes]:
        if restarted.is_set():
            return 200, b""
        # A retry squeezed into the first run's shutdown hangs, and its sender is gone
        # by the time it would be answered: it never counts as delivered.
        await restarted.wait()
        return 599, b""

    with trio.fail_after(60):
        async with open_sink(fail_first=5, respond=after_restart) as sink:
            async with running_daemon(cfg) as (daemon, client):
                sids = [
                    await create(client, NUMBER, CUSTOMER, f"m{i}", StatusCallback=sink.url + "/status")
                    for i in range(3)
                ]
                for sid in sids:
                    await wait_status(client, sid, "sent")
                await sink.wait_for(lambda s: len(s.failed()) >= 5)
                assert queued_callbacks(daemon) == 3
            assert sink.delivered() == []
            restarted.set()
            async with running_daemon(cfg) as (daemon, client):
                await sink.wait_for(lambda s: len(s.delivered()) >= 3)
                await poll(lambda: queued_callbacks(daemon) == 0)
                await trio.sleep(0.3)  # and nothing more arrives
        assert sum(h.status == 503 for h in sink.hits) == 5
        delivered = [h.form["MessageSid"] for h in sink.delivered()]
        assert sorted(delivered) == sorted(sids)  # every pending callback, none twice
        tokens = [h.headers["i-twilio-idempotency-token"] for h in sink.hits]
        assert len(set(tokens)) == 3  # retries carry the same token
        assert_signed(sink.hits)


async def test_a_dead_endpoint_delays_neither_delivery_nor_other_customers(tmp_path: Path) -> None:
    async def hang(_: Hit) -> tuple[int, bytes]:
        await trio.sleep_forever()
        raise AssertionError

    cfg = config(tmp_path / "d", callbacks_extra="timeout = 60.0\nper_destination = 2\n")
    with trio.fail_after(30):
        async with (
            open_sink(respond=hang) as dead,
            open_sink() as good,
            running_daemon(cfg) as (daemon, client),
        ):
            stuck = [
                await create(client, NUMBER, CUSTOMER, f"s{i}", StatusCallback=dead.url + "/cb")
                for i in range(8)
            ]
            fine = [
                await create(client, NUMBER, "+15557654321", f"f{i}", StatusCallback=good.url + "/cb")
                for i in range(3)
            ]
            await good.wait_for(lambda s: len(s.delivered()) == 9, timeout=10)
            for sid in stuck + fine:
                await wait_status(client, sid, "read")
            assert len(dead.hits) == 0  # still hanging on the first two requests
            await poll(lambda: queued_callbacks(daemon) == 8 * 3)  # the good ones are all done


async def test_private_callback_urls_are_refused_and_dropped(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_sink() as sink, running_daemon(config(tmp_path / "d")) as (daemon, client):
            port = sink.url.rsplit(":", 1)[1]
            with capture_logs() as logs:
                sid = await create(
                    client, NUMBER, CUSTOMER, "x", StatusCallback=f"http://127.0.0.2:{port}/cb"
                )  # not allow-listed
                await wait_status(client, sid, "read")
                await poll(lambda: queued_callbacks(daemon) == 0)
            refused = [e for e in logs if e["event"] == "callback.refused"]
            assert refused and refused[0]["sid"] == sid and "127.0.0.2" in refused[0]["reason"]
            assert sink.hits == []
            metrics = (await client.get("/metrics")).text
            assert "wadispatch_callbacks_refused_total 3.0" in metrics  # sent, delivered, read
            assert "wadispatch_callback_queue_depth 0.0" in metrics
            bad = await client.post(
                messages_path(),
                data={
                    "From": f"whatsapp:{NUMBER}",
                    "To": f"whatsapp:{CUSTOMER}",
                    "Body": "x",
                    "StatusCallback": "ftp://example.com/x",
                },
            )
            assert bad.status_code == 400 and bad.json()["code"] == 21609
