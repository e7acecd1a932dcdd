"""Create over real HTTP: API keys, JSON bodies, idempotent retries and the batch fast path."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from actors.supervisor import Supervisor
from dispatcher import config as configuration
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import number_key
from dispatcher.frontdoor import batch
from tests.helpers.daemon import ACCOUNT, NUMBERS, messages_path, running_daemon, sandbox_config
from tests.helpers.intake import build_intake

FROM = "whatsapp:+15550000001"
TO = "whatsapp:+15551234567"
KEY, KEY_SECRET = "SK" + "0" * 31 + "1", "key-secret-0123456789"
OTHER = "AC" + "0" * 31 + "2"
OTHER_KEY = "SK" + "0" * 31 + "2"
EXTRA = f"""
[[accounts.api_keys]]
sid = "{KEY}"
secret = {{ value = "{KEY_SECRET}" }}

[[accounts]]
sid = "{OTHER}"
auth_token = {{ value = "other-auth-token-0123" }}
[[accounts.api_keys]]
sid = "{OTHER_KEY}"
secret = {{ value = "other-key-secret" }}
"""


@pytest.fixture
async def daemon(tmp_path: Path):
    """Slow numbers (one send, then one per 1000 s) so the outbox shows what was accepted."""
    with trio.fail_after(60):
        async with running_daemon(
            sandbox_config(tmp_path / "data", rate=0.001, burst=1, extra=EXTRA)
        ) as pair:
            yield pair


def accepted(running) -> int:
    """Messages in the store (sent or queued)."""
    return running.store.count(b"by_account", ACCOUNT.encode() + b"\x00")


def outbox_total(running) -> int:
    return sum(running.store.count(b"outbox", number_key(n)) for n in NUMBERS)


# -- API keys -------------------------------------------------------------------------


async def test_an_api_key_acts_as_its_account(daemon) -> None:
    running, client = daemon
    resp = await client.post(
        messages_path(), data={"To": TO, "From": FROM, "Body": "k"}, auth=(KEY, KEY_SECRET)
    )
    assert resp.status_code == 201 and resp.json()["account_sid"] == ACCOUNT

    def use_sdk() -> tuple[str, str]:
        sdk = Client(KEY, KEY_SECRET, ACCOUNT)
        sdk.api.base_url = running.url
        msg = sdk.messages.create(from_=FROM, to=TO, body="via an API key")
        return msg.status, sdk.messages(msg.sid).fetch().body

    assert await trio.to_thread.run_sync(use_sdk) == ("queued", "via an API key")
    for auth, status in [
        ((KEY, "wrong"), 401),
        (("SK" + "9" * 32, KEY_SECRET), 401),
        ((OTHER_KEY, "other-key-secret"), 403),  # a valid key of another account
    ]:
        resp = await client.get(messages_path(), auth=auth)
        assert resp.status_code == status and resp.json()["code"] == 20003, auth


def test_api_key_config_errors_name_the_key(tmp_path: Path) -> None:
    dup = EXTRA.replace(OTHER_KEY, KEY)
    with pytest.raises(
        configuration.ConfigError, match=r"accounts\[1\]\.api_keys\[0\]\.sid: duplicate API key"
    ):
        sandbox_config(tmp_path, extra=dup)
    with pytest.raises(configuration.ConfigError, match=r"accounts\[0\]\.api_keys\[0\]\.sid"):
        sandbox_config(tmp_path, extra=EXTRA.replace(KEY, "SKnothex"))


# -- JSON create ------------------------------------------------------------------------


async def test_json_create_matches_form_create(daemon) -> None:
    _, client = daemon
    resp = await client.post(messages_path(), json={"To": TO, "From": FROM, "Body": "json 👍"})
    assert resp.status_code == 201 and resp.json()["body"] == "json 👍" and resp.json()["to"] == TO
    resp = await client.post(messages_path(), json={"To": "whatsapp:555", "From": FROM, "Body": "x"})
    assert resp.status_code == 400 and resp.json()["code"] == 21211
    resp = await client.post(
        messages_path(), content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400 and resp.json()["code"] == 20001
    resp = await client.post(messages_path(), content=b"To=x", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415 and resp.json()["code"] == 20001


# -- idempotency ------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Idempotency-Key", "I-Twilio-Idempotency-Token"])
async def test_a_retried_create_returns_the_original(daemon, header: str) -> None:
    running, client = daemon
    form = {"To": TO, "From": FROM, "Body": "once"}
    first = await client.post(messages_path(), data=form, headers={header: "order-42"})
    assert first.status_code == 201
    async with trio.open_nursery() as nursery:  # concurrent retries race the same key
        results: list[httpx.Response] = []

        async def retry() -> None:
            results.append(await client.post(messages_path(), data=form, headers={header: "order-42"}))

        for _ in range(5):
            nursery.start_soon(retry)
    assert {r.json()["sid"] for r in results} == {first.json()["sid"]}
    assert {r.status_code for r in results} == {201}
    assert accepted(running) == 1
    # The same key with other parameters is a client bug, not a new message.
    changed = await client.post(messages_path(), data={**form, "Body": "twice"}, headers={header: "order-42"})
    assert changed.status_code == 422 and changed.json()["code"] == 20001
    # Keys are per account: another account's identical key is its own.
    other = await client.post(
        f"/2010-04-01/Accounts/{OTHER}/Messages.json",
        data=form,
        headers={header: "order-42"},
        auth=(OTHER, "other-auth-token-0123"),
    )
    assert other.status_code == 400 and other.json()["code"] == 63007  # its own rules, not a replay
    fresh = await client.post(messages_path(), data=form, headers={header: "order-43"})
    assert fresh.json()["sid"] != first.json()["sid"] and accepted(running) == 2


async def test_bad_idempotency_keys_are_refused(daemon) -> None:
    running, client = daemon
    for key in ["has space", "x" * 256]:
        resp = await client.post(
            messages_path(), data={"To": TO, "From": FROM, "Body": "b"}, headers={"Idempotency-Key": key}
        )
        assert resp.status_code == 400 and resp.json()["code"] == 20001
    assert accepted(running) == 0


# -- batch ------------------------------------------------------------------------------


async def test_batch_answers_per_item_in_order(daemon) -> None:
    running, client = daemon
    items = [
        {"to": TO, "from": FROM, "body": "one"},
        {"to": "whatsapp:555", "from": FROM, "body": "bad to"},
        {
            "to": TO,
            "from": "whatsapp:+15550000002",
            "body": "two",
            "status_callback": "https://example.com/cb",
        },
        {"to": TO, "from": FROM},
        {"to": TO, "from": "whatsapp:+15557777777", "body": "not ours"},
    ]
    resp = await client.post("/v1/messages:batch", json=items)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["accepted"], out["rejected"]) == (2, 3)
    results = out["results"]
    assert [r.get("status") for r in results] == ["queued", None, "queued", None, None]
    assert [r["error"]["code"] for r in results if "error" in r] == [21211, 21602, 63007]
    assert all(r["error"]["status"] == 400 and r["error"]["more_info"] for r in results if "error" in r)
    stored = (await client.get(messages_path(results[2]["sid"]))).json()
    assert stored["body"] == "two" and stored["from"] == "whatsapp:+15550000002"
    assert accepted(running) == 2


async def test_a_batch_is_one_store_write(writer) -> None:
    intake = build_intake(
        writer,
        supervisor=Supervisor([]),
        accounts={ACCOUNT: "t"},
        numbers={n: NumberInfo(number=n, account_sid=ACCOUNT, webhook_secret="s") for n in NUMBERS},
        wall=SystemWallClock(),
    )
    items = [batch.BatchItem(to=f"whatsapp:+1555123{i:04d}", from_=FROM, body=f"m{i}") for i in range(300)]
    items.append(batch.BatchItem(to="whatsapp:1", from_=FROM, body="bad"))
    before = writer.statistics()
    out = msgspec.json.decode(await batch.accept_batch(intake.rules, intake.gateway, ACCOUNT, items))
    after = writer.statistics()
    assert (out["accepted"], out["rejected"]) == (300, 1)
    assert (after.commits - before.commits, after.writes - before.writes) == (1, 1)
    assert writer.count(b"outbox", number_key("+15550000001")) == 300
    seqs = [int.from_bytes(k[-8:], "big") for k, _ in writer.scan(b"outbox", number_key("+15550000001"))]
    assert seqs == list(range(1, 301))  # FIFO in batch order


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"[]", 400, "empty"),
        (b'{"to": "x"}', 400, "Expected `array`"),
        (b'[{"to": 5}]', 400, "$[0].to"),
        (b'[{"to": "x", "colour": "red"}]', 400, "colour"),
        (b"[{", 400, "not valid JSON"),
        (b"[" + b",".join([b"{}"] * 1001) + b"]", 413, "at most 1000"),
    ],
)
async def test_malformed_batches_are_rejected_whole(daemon, body: bytes, status: int, fragment: str) -> None:
    running, client = daemon
    resp = await client.post("/v1/messages:batch", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status and fragment in resp.json()["message"], resp.text
    assert accepted(running) == 0


async def test_batch_needs_credentials_and_takes_no_idempotency_key(daemon) -> None:
    running, client = daemon
    item = [{"to": TO, "from": FROM, "body": "x"}]
    resp = await client.post("/v1/messages:batch", json=item, auth=(ACCOUNT, "wrong"))
    assert resp.status_code == 401 and resp.json()["code"] == 20003
    resp = await client.post("/v1/messages:batch", json=item, auth=(KEY, KEY_SECRET))
    assert resp.status_code == 200 and resp.json()["accepted"] == 1  # API keys work here too
    resp = await client.post("/v1/messages:batch", json=item, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 400 and resp.json()["code"] == 20001
    resp = await client.post("/v1/messages:batch", json=item, auth=(OTHER, "other-auth-token-0123"))
    assert resp.status_code == 200 and resp.json()["results"][0]["error"]["code"] == 63007
    assert accepted(running) == 1


class TokenHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, adding Twilio's idempotency header to creates."""

    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None

    def request(self, method, url, params=None, data=None, headers=None, **kwargs):
        headers = dict(headers or {})
        if self.token is not None and method == "POST":
            headers["I-Twilio-Idempotency-Token"] = self.token
        return super().request(method, url, params, data, headers, **kwargs)


async def test_sdk_retry_with_an_idempotency_token(daemon) -> None:
    running, _ = daemon

    def use_sdk() -> tuple[bool, int, int]:
        http = TokenHttpClient()
        sdk = Client(ACCOUNT, "sandbox-auth-token", http_client=http)
        sdk.api.base_url = running.url
        http.token = "sdk-1"
        first = sdk.messages.create(from_=FROM, to=TO, body="a")
        again = sdk.messages.create(from_=FROM, to=TO, body="a")
        try:
            sdk.messages.create(from_=FROM, to=TO, body="b")
        except TwilioRestException as exc:
            return first.sid == again.sid, exc.status, exc.code
        raise AssertionError("no error")

    assert await trio.to_thread.run_sync(use_sdk) == (True, 422, 20001)
    assert accepted(running) == 1
