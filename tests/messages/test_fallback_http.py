"""Fallback over real HTTP: the twilio SDK's ``fallback_from``, our extension parameters through the
SDK's own request path, the batch route, the embedded simulator's failed webhooks, and a restart of
the daemon on the same data dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
from twilio.rest import Client

from dispatcher.service.daemon import Running
from tests.helpers.callback_sink import FAST_CALLBACKS, open_sink
from tests.helpers.configs import keys
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon, sandbox_config

SERVICE = "MG" + "e" * 32
ONE, TWO, THREE = "+15550000001", "+15550000002", "+15550000003"
NOT_ON_WHATSAPP = "+15559990001"  # the simulator answers this recipient with a failed status, 1013 (63003)
CUSTOMER = "+15551234567"
SERVICE_SECTION = f"""
[[services]]
sid = "{SERVICE}"
account = "{ACCOUNT}"
numbers = ["{ONE}"]
[services.fallback]
from = "{TWO}"
error_codes = [63003, 63024]
"""
CALLBACKS_SECTION = """
[callbacks]
allow_private = ["127.0.0.1/32"]
poll_interval = 0.02
backoff_initial = 0.05
"""
QUIET = "status_webhooks = false"  # the simulator posts no statuses: nothing is ever delivered


def sdk(running: Running) -> Client:
    client = Client(ACCOUNT, TOKEN)
    client.api.base_url = running.url
    return client


async def resource(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    resp = await client.get(messages_path(sid))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def fallback_of(client: httpx.AsyncClient, sid: str, timeout: float = 15.0) -> dict[str, Any]:
    """The fallback message of ``sid``, once linked (the real clock: the daemon works meanwhile)."""
    with trio.fail_after(timeout):
        while "fallback_sid" not in (primary := await resource(client, sid)):  # noqa: ASYNC110 - real clock
            await trio.sleep(0.05)
    return await resource(client, primary["fallback_sid"])


async def test_the_sdk_fallback_from_overrides_the_service_sender_on_a_failed_status(tmp_path: Path) -> None:
    with trio.fail_after(60):
        cfg = sandbox_config(tmp_path / "d", extra=SERVICE_SECTION + CALLBACKS_SECTION)
        async with open_sink() as sink, running_daemon(cfg) as (daemon, client):

            def use_sdk() -> tuple[str, str]:
                twilio = sdk(daemon)
                by_service = twilio.messages.create(
                    messaging_service_sid=SERVICE,
                    to=f"whatsapp:{NOT_ON_WHATSAPP}",
                    body="Your code is 4711",
                    status_callback=f"{sink.url}/status",
                )
                own = twilio.messages.create(
                    messaging_service_sid=SERVICE,
                    to=f"whatsapp:{NOT_ON_WHATSAPP}",
                    body="Your code is 4712",
                    fallback_from=f"whatsapp:{THREE}",  # the SDK's own parameter (RCS -> SMS at Twilio)
                )
                return by_service.sid, own.sid

            first, second = await trio.to_thread.run_sync(use_sdk)
            one, other = await fallback_of(client, first), await fallback_of(client, second)
            assert (one["from"], one["body"], one["primary_sid"]) == (
                f"whatsapp:{TWO}",
                "Your code is 4711",
                first,
            )
            assert (other["from"], other["primary_sid"]) == (f"whatsapp:{THREE}", second)
            primary = await resource(client, first)
            assert (primary["status"], primary["error_code"]) == ("failed", 63003)
            # The SDK reads the linked messages like any (our fields are extra keys it ignores).
            fetched = await trio.to_thread.run_sync(lambda: sdk(daemon).messages(one["sid"]).fetch())
            assert fetched.from_ == f"whatsapp:{TWO}" and fetched.body == "Your code is 4711"
            # The fallback was sent to the same customer, who is not on WhatsApp either: it fails
            # too, and there is no third message.
            with trio.fail_after(10):
                while (await resource(client, one["sid"]))["status"] != "failed":  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await trio.sleep(0.5)
            assert "fallback_sid" not in await resource(client, one["sid"])
            assert daemon.fallbacks.sent == 2 and daemon.fallbacks.pending() == 0
            # The fallback's status callbacks say it stands in for the first, and who carried it;
            # twilio's RequestValidator accepts them with our extra parameters signed in.
            await sink.wait_for(lambda k: any(h.form.get("PrimarySid") == first for h in k.delivered()))
            stand_in = next(h for h in sink.delivered() if h.form.get("PrimarySid") == first)
            assert stand_in.form["MessageSid"] == one["sid"] and stand_in.form["From"] == f"whatsapp:{TWO}"
            assert stand_in.signed_by(TOKEN)
            metrics = (await client.get("/metrics")).text
            assert "wadispatch_fallbacks_sent_total 2.0" in metrics
            assert "wadispatch_fallbacks_pending 0.0" in metrics


async def test_extension_parameters_pass_through_the_sdk_request(tmp_path: Path) -> None:
    with trio.fail_after(60):
        cfg = sandbox_config(tmp_path / "d", simulator_extra=QUIET)
        async with running_daemon(cfg) as (daemon, client):
            url = f"{daemon.url}{messages_path()}"
            data = {
                "From": f"whatsapp:{ONE}",
                "To": f"whatsapp:{CUSTOMER}",
                "Body": "Your table is ready",
                "FallbackFrom": TWO,
                "FallbackAfter": "0.5",
                "FallbackAwait": "delivered",
                "FallbackBody": "Table ready (SMS)",
            }
            answer = await trio.to_thread.run_sync(lambda: sdk(daemon).request("POST", url, data=data))
            assert answer.status_code == 201, answer.text
            created = json.loads(answer.text)
            assert "fallback_sid" not in created  # nothing to link yet
            fallback = await fallback_of(client, created["sid"])
            assert (fallback["from"], fallback["body"]) == (f"whatsapp:{TWO}", "Table ready (SMS)")
            assert (await resource(client, created["sid"]))["status"] == "sent"  # it keeps its course
            bad = await trio.to_thread.run_sync(
                lambda: sdk(daemon).request("POST", url, data={**data, "FallbackAfter": "soon"})
            )
            assert bad.status_code == 400 and json.loads(bad.text)["code"] == 20001


async def test_batch_items_carry_the_fallback_fields(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d")) as (_daemon, client):
            items = [
                {
                    "to": NOT_ON_WHATSAPP,
                    "from": ONE,
                    "body": "a",
                    "fallback_from": TWO,
                    "fallback_error_codes": [63003],
                },
                {
                    "to": NOT_ON_WHATSAPP,
                    "from": ONE,
                    "body": "b",
                    "fallback_from": TWO,
                    "fallback_error_codes": "63003",
                },
                {"to": NOT_ON_WHATSAPP, "from": ONE, "body": "c", "fallback_from": TWO},
            ]
            resp = await client.post("/v1/messages:batch", json=items)
            assert resp.status_code == 200, resp.text
            results = resp.json()["results"]
            assert results[2]["error"]["code"] == 20001  # no condition: refused alone
            for result, body in zip(results[:2], "ab", strict=True):
                fallback = await fallback_of(client, result["sid"])
                assert (fallback["from"], fallback["body"]) == (f"whatsapp:{TWO}", body)


async def test_a_deadline_outlives_the_daemon(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "d", simulator_extra=QUIET)
    data = {"From": ONE, "To": CUSTOMER, "Body": "Still there?", "FallbackFrom": TWO, "FallbackAfter": "1.5"}
    with trio.fail_after(60):
        async with running_daemon(cfg) as (daemon, client):
            created = (await client.post(messages_path(), data=data)).json()
            assert daemon.fallbacks.pending() == 1
        # Stopped before its time; the next daemon on the same data dir sends it.
        async with running_daemon(cfg) as (daemon, client):
            fallback = await fallback_of(client, created["sid"])
            assert fallback["primary_sid"] == created["sid"] and daemon.fallbacks.pending() == 0


SMS = "+15550007777"
UK_CUSTOMER = "+447700900123"


def sms_number(sink_url: str) -> str:
    """A simulated Vonage SMS number (the shipped spec), its callbacks to the sink."""
    head = {
        "number": SMS,
        "account": ACCOUNT,
        "channel": "vonage-sms",
        "simulated": True,
        "status_callback": f"{sink_url}/status",
    }
    settings = {
        "api_key": "vonage-key",
        "api_secret": {"value": "vonage-secret"},
        "webhook_secret": "vonage-hook-secret-0123456789",
    }
    return "\n[[numbers]]\n" + keys(head) + "[numbers.settings]\n" + keys(settings)


async def test_whatsapp_refused_for_the_window_goes_as_a_vonage_sms_delivered_end_to_end(
    tmp_path: Path,
) -> None:
    """WhatsApp -> SMS over real sockets: the daemon, its simulator serving On-Prem WhatsApp and the
    Vonage spec, the SMS's delivery receipt back through its signed webhook, callbacks to a sink."""
    with trio.fail_after(60):
        async with open_sink() as sink:
            cfg = sandbox_config(
                tmp_path / "d",
                numbers=(ONE,),
                number_extra="enforce_window = true",  # the customer never wrote: no free-form
                extra=FAST_CALLBACKS + sms_number(sink.url),
            )
            async with running_daemon(cfg) as (daemon, client):
                url = f"{daemon.url}{messages_path()}"
                data = {
                    "From": f"whatsapp:{ONE}",
                    "To": f"whatsapp:{UK_CUSTOMER}",
                    "Body": "Your code is 4711",
                    "StatusCallback": f"{sink.url}/status",
                    "FallbackFrom": SMS,
                    "FallbackErrorCodes": "63016,63003",
                }
                answer = await trio.to_thread.run_sync(lambda: sdk(daemon).request("POST", url, data=data))
                assert answer.status_code == 201, answer.text
                created = json.loads(answer.text)
                assert (created["status"], created["error_code"]) == ("failed", 63016)
                fallback = await fallback_of(client, created["sid"])
                assert (fallback["from"], fallback["to"], fallback["body"]) == (
                    SMS,
                    UK_CUSTOMER,
                    "Your code is 4711",
                )
                with trio.fail_after(10):
                    while (await resource(client, fallback["sid"]))["status"] != "delivered":  # noqa: ASYNC110
                        await trio.sleep(0.05)
                await sink.wait_for(
                    lambda k: any(h.form.get("MessageStatus") == "delivered" for h in k.delivered("/status"))
                )
                stand_in = [h for h in sink.delivered("/status") if h.form["MessageSid"] == fallback["sid"]]
                assert [h.form["MessageStatus"] for h in stand_in] == ["sent", "delivered"]
                assert {h.form["ChannelPrefix"] for h in stand_in} == {"sms"}  # the channel that carried it
                assert all(h.form["PrimarySid"] == created["sid"] and h.form["From"] == SMS for h in stand_in)
                assert all(h.signed_by(TOKEN) for h in sink.delivered("/status"))
                first = [h.form for h in sink.delivered("/status") if h.form["MessageSid"] == created["sid"]]
                assert [(f["MessageStatus"], f["ChannelPrefix"]) for f in first] == [("failed", "whatsapp")]
                assert daemon.simulator is not None
                [sms] = daemon.simulator.specs.received(SMS)
                assert sms.values.get("body") == "Your code is 4711"
                assert daemon.simulator.received(ONE) == []
