"""WhatsApp specifics over real HTTP: the admin template routes and the twilio SDK's parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from dispatcher.service.daemon import Running
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon, sandbox_config

ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVICE = "MG" + "c" * 32
FROM, TO = "whatsapp:+15550000001", "whatsapp:+15551234567"
EXTRA = f"""
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
[[services]]
sid = "{SERVICE}"
account = "{ACCOUNT}"
numbers = ["+15550000001", "+15550000002"]
"""
TEMPLATE = {
    "account": ACCOUNT,
    "namespace": "cdb2df51_9816_c754_c5a4_64cdabdcad3e",
    "name": "order_shipped",
    "language": "en_US",
    "body": "Hi {{1}}, your order {{2}} has shipped.",
}


async def public_dns(host: str, port: int) -> list[str]:
    """No internet here: every media host is a public address (the SSRF guard resolves them)."""
    return ["93.184.216.34"]


def sdk(running: Running) -> Client:
    client = Client(ACCOUNT, TOKEN)
    client.api.base_url = running.url
    return client


async def until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - a real daemon on the real clock
            await trio.sleep(0.02)


async def test_admin_adds_and_lists_templates_and_the_sdk_sends_one(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d", extra=EXTRA)) as (daemon, client):
            url = "/admin/v1/templates"
            assert (await client.post(url, json=TEMPLATE)).status_code == 401  # account creds are not admin
            created = await client.post(url, json=TEMPLATE, headers=ADMIN, auth=None)
            assert created.status_code == 201, created.text
            sid = created.json()["sid"]
            assert created.json() == {**TEMPLATE, "sid": sid}
            again = await client.post(url, json={**TEMPLATE, "sid": sid}, headers=ADMIN, auth=None)
            assert again.status_code == 409
            for bad in [{**TEMPLATE, "body": "{{2}} only"}, {**TEMPLATE, "name": "Bad Name"}, {"x": 1}]:
                resp = await client.post(url, json=bad, headers=ADMIN, auth=None)
                assert resp.status_code == 400 and resp.json()["code"] == 20001, resp.text
            listed = (await client.get(url, headers=ADMIN, auth=None)).json()["templates"]
            assert [t["sid"] for t in listed] == [sid]
            other = "AC" + "9" * 32
            assert (await client.get(f"{url}?account={other}", headers=ADMIN, auth=None)).json() == {
                "templates": []
            }

            def use_sdk() -> tuple[str, str]:
                msg = sdk(daemon).messages.create(
                    from_=FROM, to=TO, content_sid=sid, content_variables=json.dumps({"1": "Ada", "2": "#42"})
                )
                try:
                    sdk(daemon).messages.create(from_=FROM, to=TO, content_sid=sid, content_variables="{}")
                except TwilioRestException as exc:
                    return msg.body, f"{exc.status}/{exc.code}"
                raise AssertionError("the SDK did not raise")

            body, error = await trio.to_thread.run_sync(use_sdk)
            assert body == "Hi Ada, your order #42 has shipped." and error == "400/21656"
            assert daemon.simulator is not None
            await until(lambda: bool(daemon.simulator and daemon.simulator.received("+15550000001")))
            [sent] = daemon.simulator.received("+15550000001")
            assert sent.type == "template"


async def test_sdk_media_urls_and_a_scheduled_message_canceled(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d", extra=EXTRA), resolver=public_dns) as (
            daemon,
            _client,
        ):

            def use_sdk() -> tuple[str, str, str, str, str, str]:
                client = sdk(daemon)
                media = client.messages.create(
                    from_=FROM,
                    to=TO,
                    body="two files",
                    media_url=["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.pdf"],
                )
                later = datetime.now(UTC) + timedelta(hours=2)
                scheduled = client.messages.create(
                    messaging_service_sid=SERVICE, to=TO, body="later", send_at=later, schedule_type="fixed"
                )
                canceled = client.messages(scheduled.sid).update(status="canceled")
                return (
                    media.sid,
                    media.num_media,
                    scheduled.status,
                    scheduled.messaging_service_sid,
                    canceled.status,
                    client.messages(scheduled.sid).fetch().status,
                )

            sid, num_media, status, service, canceled, fetched = await trio.to_thread.run_sync(use_sdk)
            assert sid.startswith("MM") and num_media == "2"
            assert (status, service, canceled, fetched) == ("scheduled", SERVICE, "canceled", "canceled")
            assert daemon.scheduler.pending() == 0
            assert daemon.simulator is not None
            await until(lambda: len(daemon.simulator.received("+15550000001")) == 2)  # type: ignore[union-attr]
            kinds = [r.type for r in daemon.simulator.received("+15550000001")]
            assert kinds == ["image", "document"]


async def test_form_parameters_reach_the_whatsapp_rules(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d", extra=EXTRA)) as (_daemon, client):
            cases = [
                ({"MediaUrl": ["https://x.io/a.jpg"] * 11}, 21623),
                ({"MediaUrl": "ftp://x.io/a.jpg"}, 21620),
                ({"ContentSid": "HX00"}, 21655),
                ({"ValidityPeriod": "0"}, 21624),
                ({"MessagingServiceSid": "MG" + "d" * 32}, 21705),
                (
                    {
                        "SendAt": "2020-01-01T00:00:00Z",
                        "ScheduleType": "fixed",
                        "MessagingServiceSid": SERVICE,
                    },
                    35114,
                ),
            ]
            for extra, code in cases:
                data = {"From": FROM, "To": TO, "Body": "x", **extra}
                resp = await client.post(messages_path(), data=data)
                assert (resp.status_code, resp.json()["code"]) == (400, code), (extra, resp.text)
            ok = await client.post(
                messages_path(), data={"From": FROM, "To": TO, "Body": "x", "ValidityPeriod": "60"}
            )
            assert ok.status_code == 201


async def test_json_bodies_carry_media_and_services_too(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d", extra=EXTRA), resolver=public_dns) as (
            _daemon,
            client,
        ):
            resp = await client.post(
                messages_path(),
                json={"MessagingServiceSid": SERVICE, "To": TO, "MediaUrl": ["https://x.io/v.mp4"]},
            )
            assert resp.status_code == 201, resp.text
            body = resp.json()
            assert body["messaging_service_sid"] == SERVICE and body["num_media"] == "1"
            assert body["from"] in ("whatsapp:+15550000001", "whatsapp:+15550000002")
            again = await client.post(
                messages_path(), json={"MessagingServiceSid": SERVICE, "To": TO, "Body": "b"}
            )
            assert again.json()["from"] == body["from"]  # sticky sender
