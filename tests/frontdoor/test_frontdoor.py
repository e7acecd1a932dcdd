"""The Twilio-compatible front door over real HTTP: every bad input has a clear Twilio error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from dispatcher.core.store import number_key
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon, sandbox_config

FROM = "whatsapp:+15550000001"
TO = "whatsapp:+15551234567"
OTHER = "AC00000000000000000000000000000002"
EXTRA_ACCOUNT = f"""
[[accounts]]
sid = "{OTHER}"
auth_token = {{ value = "other-auth-token-0123" }}
"""


@pytest.fixture
async def daemon(tmp_path: Path):
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=EXTRA_ACCOUNT)) as pair:
            yield pair


def outbox_total(daemon) -> int:
    return sum(
        daemon.store.count(b"outbox", number_key(n)) for n in ("+15550000001", "+15550000002", "+15550000003")
    )


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"From": FROM, "Body": "hi"}, 400, 21604),
        ({"To": "whatsapp:555", "From": FROM, "Body": "hi"}, 400, 21211),
        ({"To": "whatsapp:+0123456789", "From": FROM, "Body": "hi"}, 400, 21211),
        ({"To": TO, "Body": "hi"}, 400, 21603),
        ({"To": TO, "From": "whatsapp:12", "Body": "hi"}, 400, 21212),
        ({"To": TO, "From": "whatsapp:+15557777777", "Body": "hi"}, 400, 63007),
        ({"To": FROM, "From": FROM, "Body": "hi"}, 400, 21211),
        ({"To": TO, "From": FROM}, 400, 21602),
        ({"To": TO, "From": FROM, "Body": ""}, 400, 21602),
        ({"To": TO, "From": FROM, "Body": "x" * 1601}, 400, 21617),
    ],
)
async def test_bad_create_requests_get_twilio_errors_and_store_nothing(daemon, form, status, code) -> None:
    running, client = daemon
    resp = await client.post(messages_path(), data=form)
    assert resp.status_code == status
    body = resp.json()
    assert body["code"] == code and body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}" and body["message"]
    assert outbox_total(running) == 0


async def test_body_of_exactly_1600_characters_is_accepted(daemon) -> None:
    _, client = daemon
    resp = await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "x" * 1600})
    assert resp.status_code == 201


async def test_bad_credentials_are_refused(daemon) -> None:
    running, client = daemon
    for auth in [(ACCOUNT, "wrong"), ("ACnobody", TOKEN), None]:
        resp = await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "hi"}, auth=auth)
        assert resp.status_code == 401 and resp.json()["code"] == 20003
    async with httpx.AsyncClient(base_url=running.url) as anon:
        for header in ["Basic %%%", "Basic " + "QUM6", "Bearer abc", ""]:
            garbage = await anon.post(
                messages_path(),
                data={"To": TO, "From": FROM, "Body": "hi"},
                headers={"Authorization": header},
            )
            assert garbage.status_code == 401, header
    assert outbox_total(running) == 0


async def test_an_account_sees_only_its_own_numbers_and_messages(daemon) -> None:
    _, client = daemon
    created = (await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "mine"})).json()
    other = (OTHER, "other-auth-token-0123")
    path = f"/2010-04-01/Accounts/{OTHER}/Messages"
    # The other account cannot send from our number...
    resp = await client.post(f"{path}.json", data={"To": TO, "From": FROM, "Body": "hi"}, auth=other)
    assert resp.status_code == 400 and resp.json()["code"] == 63007
    # ...nor read our message through its own path...
    resp = await client.get(f"{path}/{created['sid']}.json", auth=other)
    assert resp.status_code == 404 and resp.json()["code"] == 20404
    # ...nor through ours with its credentials.
    resp = await client.get(messages_path(created["sid"]), auth=other)
    assert resp.status_code == 403 and resp.json()["code"] == 20003


async def test_unknown_message_and_route_are_twilio_404s(daemon) -> None:
    _, client = daemon
    resp = await client.get(messages_path("SM" + "0" * 32))
    assert resp.status_code == 404 and resp.json()["code"] == 20404
    resp = await client.get("/2010-04-01/Nothing.json")
    assert resp.status_code == 404 and resp.json()["code"] == 20404


async def test_webhooks_need_the_number_secret_and_a_valid_body(daemon) -> None:
    running, client = daemon
    created = (await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "hi"})).json()
    async with httpx.AsyncClient(base_url=running.url) as anon:
        forged = b'{"statuses":[{"id":"x","status":"failed","recipient_id":"1"}]}'
        resp = await anon.post("/webhooks/onprem/15550000001/wrong-secret", content=forged)
        assert resp.status_code == 403
        resp = await anon.post("/webhooks/onprem/15559999999/hook-1-secret-0123", content=forged)
        assert resp.status_code == 403
        resp = await anon.post("/webhooks/onprem/15550000001/hook-1-secret-0123", content=b"not json")
        assert resp.status_code == 400
        # Authentic and a JSON object: answered 200, the unreadable items reported, nothing changed.
        for odd in [b'{"statuses": 5}', b'{"statuses":[{"status":"read"}]}']:
            resp = await anon.post("/webhooks/onprem/15550000001/hook-1-secret-0123", content=odd)
            assert resp.status_code == 200
    final = (await client.get(messages_path(created["sid"]))).json()
    assert final["status"] != "failed"


async def test_twilio_python_sdk_works_by_changing_the_base_url(daemon) -> None:
    running, _ = daemon

    def use_sdk() -> tuple[str, str, str]:
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = running.url
        msg = client.messages.create(from_=FROM, to=TO, body="from the SDK")
        fetched = client.messages(msg.sid).fetch()
        try:
            client.messages.create(from_=FROM, to="whatsapp:123", body="bad")
        except TwilioRestException as exc:
            return msg.status, fetched.body, f"{exc.status}/{exc.code}"
        raise AssertionError("the SDK did not raise")

    status, body, error = await trio.to_thread.run_sync(use_sdk)
    assert status == "queued" and body == "from the SDK" and error == "400/21211"
