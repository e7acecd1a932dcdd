"""End to end over real sockets: spec channels (Vonage SMS, LINE, Twilio as upstream) in a running
daemon against the simulator serving the same specs. Each sends, gets its statuses back through
its signed webhooks, and receives a customer's message; the callbacks name the channel."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from twilio.request_validator import RequestValidator

from dispatcher import config as configuration
from dispatcher.core.channelspec import signing
from dispatcher.core.channelspec.load import load_registry
from dispatcher.service.daemon import Running
from tests.helpers.callback_sink import FAST_CALLBACKS, Sink, open_sink
from tests.helpers.configs import ACCOUNT, keys
from tests.helpers.daemon import TOKEN, messages_path, running_daemon, sandbox_config
from tests.helpers.messages import fetch, wait_status

SMS = "+15550007777"
TWILIO = "+15550008888"
LINE = "+15550003333"
CUSTOMER = "+447700900123"
LINE_USER = "U" + "4af49806292f6e1a2b3c4d5e6f708192"
UPSTREAM_SID = "AC" + "1" * 32
UPSTREAM_TOKEN = "upstream-auth-token-0123456789"
LINE_SECRET = "line-channel-secret-0123456789"
VONAGE_HOOK = "vonage-hook-secret-0123456789"


def number(num: str, channel: str, settings: dict[str, object], sink: Sink) -> str:
    head = {
        "number": num,
        "account": ACCOUNT,
        "channel": channel,
        "simulated": True,
        "status_callback": f"{sink.url}/status",
        "inbound_url": f"{sink.url}/inbound",
    }
    return "\n[[numbers]]\n" + keys(head) + "[numbers.settings]\n" + keys(settings)


def config(data_dir: Path, sink: Sink) -> configuration.Config:
    """The sandbox with a Vonage, a Twilio-upstream and a LINE number, callbacks to ``sink``."""
    numbers = number(
        SMS,
        "vonage-sms",
        {"api_key": "vonage-key", "api_secret": {"value": "vonage-secret"}, "webhook_secret": VONAGE_HOOK},
        sink,
    )
    numbers += number(TWILIO, "twilio-sms", {"account_sid": UPSTREAM_SID, "auth_token": UPSTREAM_TOKEN}, sink)
    numbers += number(LINE, "line", {"channel_id": "1656789012", "channel_secret": LINE_SECRET}, sink)
    return sandbox_config(data_dir, numbers=(), extra=FAST_CALLBACKS + numbers)


async def send(client: httpx.AsyncClient, frm: str, to: str, body: str = "hello") -> str:
    resp = await client.post(messages_path(), data={"From": frm, "To": to, "Body": body})
    assert resp.status_code == 201, resp.text
    sid: str = resp.json()["sid"]
    return sid


def callbacks(sink: Sink, sid: str) -> list[dict[str, str]]:
    return [h.form for h in sink.delivered("/status") if h.form.get("MessageSid") == sid]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for state the daemon or the simulator holds (nothing to wait on from outside)."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


def sim(daemon: Running):  # type: ignore[no-untyped-def]
    assert daemon.simulator is not None
    return daemon.simulator.specs


@pytest.mark.parametrize(
    ("frm", "to", "channel", "final"),
    [
        (SMS, CUSTOMER, "sms", "delivered"),
        (TWILIO, CUSTOMER, "sms", "delivered"),
        (f"line:{LINE}", f"line:{LINE_USER}", "line", "sent"),  # LINE reports no delivery of a push
    ],
)
async def test_a_spec_channel_sends_and_reports_statuses(
    frm: str, to: str, channel: str, final: str, tmp_path: Path
) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
        sid = await send(client, frm, to, "Your code is 123456")
        resource = await wait_status(client, sid, final)
        assert resource["to"] == to and resource["from"] == frm
        await until(lambda: final in [c["MessageStatus"] for c in callbacks(sink, sid)])
        seen = callbacks(sink, sid)
        assert [c["MessageStatus"] for c in seen][-1] == final
        assert {c["ChannelPrefix"] for c in seen} == {channel}
        assert all(c["To"] == to and c["From"] == frm for c in seen)
        assert all(h.signed_by(TOKEN) for h in sink.delivered("/status"))
        [message] = sim(daemon).received(frm.removeprefix("line:"))
        assert message.kind == "text" and message.values.get("body") == "Your code is 123456"


async def test_line_pushes_carry_the_sid_as_retry_key_and_a_retry_is_not_sent_twice(tmp_path: Path) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
        daemon.simulator.faults.set(LINE.lstrip("+"), _plan(script=["drop"]))  # type: ignore[union-attr]
        sid = await send(client, f"line:{LINE}", f"line:{LINE_USER}")
        await wait_status(client, sid, "sent")
        # The push was taken, its answer lost; the retry with the same key got LINE's 409.
        assert len(sim(daemon).received(LINE)) == 1
        assert sim(daemon).counters(LINE).accepted == 1
        assert sim(daemon).counters(LINE).logins == 1  # the stateless token, fetched once
        assert daemon.simulator.faults.injected == {LINE.lstrip("+"): {"drop": 1}}  # type: ignore[union-attr]


async def test_a_recipient_not_on_the_channel_fails_with_twilio_codes(tmp_path: Path) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (_, client):
        unknown = "+15559990001"  # the simulator's "not a customer" prefix
        vonage = await send(client, SMS, unknown)
        twilio = await send(client, TWILIO, unknown)
        line = await send(client, f"line:{LINE}", "line:U0000dead" + "0" * 24)
        assert (await wait_status(client, vonage, "undelivered"))["error_code"] == 30005
        assert (await wait_status(client, twilio, "undelivered"))["error_code"] == 30005
        failed = await wait_status(client, line, "failed")
        assert failed["error_code"] == 63024 and "Failed to send messages" in failed["error_message"]


async def test_inbound_messages_arrive_as_twilio_webhooks_with_the_channel_prefix(tmp_path: Path) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, _):
        sim(daemon).inbound_text(SMS, CUSTOMER, "STOP please")
        sim(daemon).inbound_text(TWILIO, CUSTOMER, "hello upstream")
        sim(daemon).inbound_text(LINE, LINE_USER, "こんにちは")
        await until(lambda: len(sink.delivered("/inbound")) == 3)
        forms = {h.form["To"]: h.form for h in sink.delivered("/inbound")}
        assert forms[SMS]["From"] == CUSTOMER and forms[SMS]["Body"] == "STOP please"
        assert forms[TWILIO]["From"] == CUSTOMER and forms[TWILIO]["Body"] == "hello upstream"
        assert forms[f"line:{LINE}"]["From"] == f"line:{LINE_USER}"
        assert forms[f"line:{LINE}"]["Body"] == "こんにちは"
        assert "WaId" not in forms[SMS]


async def test_a_line_image_arrives_with_its_media_served_from_the_channel(tmp_path: Path) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
        sim(daemon).inbound_media(LINE, LINE_USER, "image", b"\xff\xd8jpeg-bytes", "image/jpeg")
        await until(lambda: len(sink.delivered("/inbound")) == 1)
        form = sink.delivered("/inbound")[0].form
        assert form["NumMedia"] == "1" and form["MessageType"] == "image"
        media = await client.get(form["MediaUrl0"].removeprefix(daemon.url))
        assert media.status_code == 200 and media.content == b"\xff\xd8jpeg-bytes"


async def test_webhooks_that_do_not_prove_their_origin_are_refused(tmp_path: Path) -> None:
    async with (
        open_sink() as sink,
        running_daemon(config(tmp_path / "d", sink)) as (daemon, _),
        httpx.AsyncClient(base_url=daemon.url, timeout=5.0) as hooks,
    ):
        body = b'{"destination":"x","events":[]}'
        line = f"/webhooks/channel/line/{LINE.lstrip('+')}"
        assert (await hooks.post(line, content=body)).status_code == 401
        bad = {"x-line-signature": "AAAA"}
        assert (await hooks.post(line, content=body, headers=bad)).status_code == 403
        good = signing.signature(_line_signature(), LINE_SECRET, body)
        assert (await hooks.post(line, content=body, headers={"x-line-signature": good})).status_code == 200
        vonage = f"/webhooks/channel/vonage-sms/{SMS.lstrip('+')}"
        assert (await hooks.post(vonage + "/wrong-secret", content=b"{}")).status_code == 403
        assert (await hooks.post(vonage + "/" + VONAGE_HOOK, content=b"{}")).status_code == 200
        # Another kind's route for this number, or a number of another kind: refused.
        assert (
            await hooks.post(f"/webhooks/channel/line/{SMS.lstrip('+')}", content=b"{}")
        ).status_code == 403
        assert (await hooks.post(vonage + "/" + VONAGE_HOOK, content=b"not json")).status_code == 400


async def test_twilio_upstream_callbacks_are_signed_as_twilio_signs_them(tmp_path: Path) -> None:
    """The simulator signs Twilio-upstream status callbacks as Twilio does: the real SDK's
    RequestValidator accepts them, and so does the daemon's route (tampered ones are refused)."""
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
        url = f"{daemon.url}/webhooks/channel/twilio-sms/{TWILIO.lstrip('+')}"
        params = {
            "MessageSid": "SM" + "2" * 32,
            "MessageStatus": "delivered",
            "To": CUSTOMER,
            "AccountSid": UPSTREAM_SID,
        }
        loaded = load_registry().get("twilio-sms")
        assert loaded is not None and loaded.spec.webhook is not None
        sig = signing.signature(loaded.spec.webhook.signature, UPSTREAM_TOKEN, b"", url, params.items())
        assert RequestValidator(UPSTREAM_TOKEN).validate(url, params, sig)
        async with httpx.AsyncClient(timeout=5.0) as hooks:
            ok = await hooks.post(url, data=params, headers={"X-Twilio-Signature": sig})
            assert ok.status_code == 200 and ok.text.startswith("<?xml")
            tampered = await hooks.post(
                url, data={**params, "MessageStatus": "read"}, headers={"X-Twilio-Signature": sig}
            )
            assert tampered.status_code == 403
        # A real send's callbacks, as the simulator posts them (here to the sink), pass the SDK's validator.
        sim(daemon).set_webhook_url(TWILIO, f"{sink.url}/upstream")
        sid = await send(client, TWILIO, CUSTOMER)
        await until(lambda: len(sink.delivered("/upstream")) == 3)  # queued, sent, delivered
        posted = sink.delivered("/upstream")
        assert [h.form["MessageStatus"] for h in posted] == ["queued", "sent", "delivered"]
        assert all(h.signed_by(UPSTREAM_TOKEN) for h in posted)
        assert not any(h.signed_by(TOKEN) for h in posted)
        assert (await fetch(client, sid))["status"] in (
            "queued",
            "sending",
            "sent",
        )  # its webhooks went elsewhere


def _line_signature():  # type: ignore[no-untyped-def]
    loaded = load_registry().get("line")
    assert loaded is not None and loaded.spec.webhook is not None
    return loaded.spec.webhook.signature


def _plan(**fields: object):  # type: ignore[no-untyped-def]
    from dispatcher.simulator.faults import FaultPlan

    return FaultPlan(**fields)  # type: ignore[arg-type]


async def test_a_redelivered_webhook_is_applied_once(tmp_path: Path) -> None:
    async with (
        open_sink() as sink,
        running_daemon(config(tmp_path / "d", sink)) as (daemon, _),
        httpx.AsyncClient(base_url=daemon.url, timeout=5.0) as hooks,
    ):
        event = {
            "type": "message",
            "mode": "active",
            "timestamp": 1462629479859,
            "source": {"type": "user", "userId": LINE_USER},
            "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
            "deliveryContext": {"isRedelivery": False},
            "message": {"id": "468789577898262530", "type": "text", "text": "once"},
        }
        body = json.dumps({"destination": "U123", "events": [event]}).encode()
        headers = {"x-line-signature": signing.signature(_line_signature(), LINE_SECRET, body)}
        route = f"/webhooks/channel/line/{LINE.lstrip('+')}"
        assert (await hooks.post(route, content=body, headers=headers)).status_code == 200
        event["deliveryContext"] = {"isRedelivery": True}  # LINE's redelivery: same message id
        again = json.dumps({"destination": "U123", "events": [event]}).encode()
        headers = {"x-line-signature": signing.signature(_line_signature(), LINE_SECRET, again)}
        assert (await hooks.post(route, content=again, headers=headers)).status_code == 200
        await sink.wait_for(lambda s: bool(s.delivered("/inbound")))
        await trio.sleep(0.3)  # a second webhook would be on its way by now
        assert [h.form["Body"] for h in sink.delivered("/inbound")] == ["once"]


async def test_injected_faults_are_the_channels_own_answers_and_are_retried(tmp_path: Path) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
        assert daemon.simulator is not None
        daemon.simulator.faults.set(SMS.lstrip("+"), _plan(script=["throttle", "error_503"], retry_after=0.2))
        sid = await send(client, SMS, CUSTOMER)
        await wait_status(client, sid, "delivered")
        assert daemon.simulator.faults.injected == {SMS.lstrip("+"): {"throttle": 1, "error_503": 1}}
        assert sim(daemon).counters(SMS).rejected_429 == 1 and sim(daemon).counters(SMS).accepted == 1


async def test_a_revoked_login_token_is_renewed_and_the_send_goes(tmp_path: Path) -> None:
    async with open_sink() as sink, running_daemon(config(tmp_path / "d", sink)) as (daemon, client):
        await wait_status(client, await send(client, f"line:{LINE}", f"line:{LINE_USER}"), "sent")
        assert sim(daemon).revoke_tokens(LINE) == 1
        await wait_status(client, await send(client, f"line:{LINE}", f"line:{LINE_USER}"), "sent")
        assert sim(daemon).counters(LINE).logins == 2 and sim(daemon).counters(LINE).rejected_401 == 1
