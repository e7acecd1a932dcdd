"""The Messages resource over real HTTP, driven by the real twilio-python SDK and by raw requests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from dispatcher.core.store import number_key
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon, sandbox_config

FROM = "whatsapp:+15550000001"
FROM2 = "whatsapp:+15550000002"


@pytest.fixture
async def slow_daemon(tmp_path: Path):
    """One send per number right away, then one per 1000 s: later messages stay queued."""
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", rate=0.001, burst=1)) as pair:
            yield pair


def sdk(url: str) -> Client:
    client = Client(ACCOUNT, TOKEN)
    client.api.base_url = url
    return client


async def create_spaced(
    client, n: int, *, to: str = "whatsapp:+15551234567", from_: str = FROM
) -> list[dict]:
    """n messages, a few ms apart so their creation order is their listing order."""
    out = []
    for i in range(n):
        resp = await client.post(messages_path(), data={"To": to, "From": from_, "Body": f"m{i}"})
        assert resp.status_code == 201, resp.text
        out.append(resp.json())
        await trio.sleep(0.003)
    return out


async def until(client, sid: str, predicate) -> None:
    """Poll a message over HTTP until ``predicate(json)``: the daemon runs on the real clock."""
    with trio.fail_after(10):
        while not predicate((await client.get(messages_path(sid))).json()):  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_sdk_lists_with_paging_cancels_and_deletes(slow_daemon) -> None:
    running, client = slow_daemon
    created = await create_spaced(client, 5)
    await create_spaced(client, 2, to="whatsapp:+15557654321", from_=FROM2)
    newest_first = [m["sid"] for m in reversed(created)]
    await until(client, created[0]["sid"], lambda m: m["status"] != "queued")

    def use_sdk() -> dict[str, object]:
        api = sdk(running.url)
        listed = [m.sid for m in api.messages.list(from_=FROM, page_size=2)]
        limited = [m.sid for m in api.messages.list(page_size=3, limit=4)]
        to_filter = [m.to for m in api.messages.list(to="whatsapp:+15557654321")]
        canceled = api.messages(created[4]["sid"]).update(status="canceled")
        try:
            api.messages(created[3]["sid"]).delete()
        except TwilioRestException as exc:
            delete_error = (exc.status, exc.code)
        deleted = api.messages(created[0]["sid"]).delete()
        try:
            api.messages(created[0]["sid"]).fetch()
        except TwilioRestException as exc:
            fetch_error = (exc.status, exc.code)
        return {
            "listed": listed,
            "limited": limited,
            "to": to_filter,
            "canceled": canceled.status,
            "delete_error": delete_error,
            "deleted": deleted,
            "fetch_error": fetch_error,
            "after": [m.sid for m in api.messages.list(from_=FROM)],
        }

    got = await trio.to_thread.run_sync(use_sdk)
    assert got["listed"] == newest_first  # three pages of 2, 2, 1, followed by next_page_uri
    assert len(got["limited"]) == 4
    assert got["to"] == ["whatsapp:+15557654321"] * 2
    assert got["canceled"] == "canceled"
    assert got["delete_error"] == (409, 20009)  # still queued
    assert got["deleted"] is True and got["fetch_error"] == (404, 20404)
    assert got["after"] == newest_first[:-1]
    assert running.store.count(b"outbox", number_key("+15550000001")) == 3  # m1..m3 still queued


async def test_page_envelope_is_built_like_twilios(slow_daemon) -> None:
    _, client = slow_daemon
    created = await create_spaced(client, 3)
    resp = await client.get(messages_path(), params={"From": FROM, "PageSize": 2})
    assert resp.status_code == 200
    page = resp.json()
    base = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert set(page) == {
        "end", "first_page_uri", "messages", "next_page_uri", "page", "page_size",
        "previous_page_uri", "start", "uri",
    }  # fmt: skip
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["uri"] == page["first_page_uri"] == f"{base}?From=whatsapp%3A%2B15550000001&PageSize=2&Page=0"
    assert page["previous_page_uri"] is None
    assert [m["sid"] for m in page["messages"]] == [created[2]["sid"], created[1]["sid"]]
    nxt = urlsplit(page["next_page_uri"])
    assert nxt.path == base
    query = parse_qs(nxt.query)
    assert query["Page"] == ["1"] and query["PageSize"] == ["2"] and query["PageToken"][0].startswith("PA")

    second = (await client.get(page["next_page_uri"])).json()
    assert (second["page"], second["start"], second["end"]) == (1, 2, 2)
    assert [m["sid"] for m in second["messages"]] == [created[0]["sid"]]
    assert second["next_page_uri"] is None
    assert parse_qs(urlsplit(second["previous_page_uri"]).query)["PageToken"][0].startswith("PB")
    back = (await client.get(second["previous_page_uri"])).json()
    assert back["page"] == 0 and [m["sid"] for m in back["messages"]] == [m["sid"] for m in page["messages"]]
    # ``Page`` alone (a hand-built URL) skips whole pages.
    by_number = (await client.get(messages_path(), params={"From": FROM, "PageSize": 2, "Page": 1})).json()
    assert [m["sid"] for m in by_number["messages"]] == [created[0]["sid"]]


async def test_date_sent_filters(slow_daemon) -> None:
    _, client = slow_daemon
    created = await create_spaced(client, 2)
    await until(client, created[0]["sid"], lambda m: m["date_sent"] is not None)
    today = datetime.now(UTC).date().isoformat()
    sent_only = [created[0]["sid"]]  # the second is still queued: no date_sent
    for params, expected in [
        ({"DateSent": today}, sent_only),
        ({"DateSent": f"{today}T00:00:00Z"}, sent_only),  # the SDK's form of a date
        ({"DateSent>": today}, sent_only),
        ({"DateSent<": today}, sent_only),  # "on or before"
        ({"DateSent<": "2001-01-01"}, []),
        ({"DateSent>": "2999-01-01T00:00:00Z"}, []),
        ({"DateSent": "2001-01-01"}, []),
    ]:
        resp = await client.get(messages_path(), params=params)
        assert resp.status_code == 200, (params, resp.text)
        assert [m["sid"] for m in resp.json()["messages"]] == expected, params


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"PageSize": "1001"}, 20007),
        ({"PageSize": "0"}, 20001),
        ({"PageSize": "ten"}, 20001),
        ({"Page": "-1"}, 20001),
        ({"PageToken": "PAnonsense"}, 21481),
        ({"PageToken": "PX1_SM" + "0" * 32}, 21481),
        ({"DateSent": "yesterday"}, 20001),
        ({"DateSent": "2026-02-30"}, 20001),
        ({"DateSent<": "not a time"}, 20001),
    ],
)
async def test_bad_list_parameters_are_twilio_400s(slow_daemon, params, code) -> None:
    _, client = slow_daemon
    resp = await client.get(messages_path(), params=params)
    assert resp.status_code == 400 and resp.json()["code"] == code, resp.text


async def test_listing_is_per_account_and_needs_auth(slow_daemon) -> None:
    _, client = slow_daemon
    await create_spaced(client, 1)
    resp = await client.get(messages_path(), auth=(ACCOUNT, "wrong"))
    assert resp.status_code == 401 and resp.json()["code"] == 20003
    other = "AC" + "9" * 32
    resp = await client.get(f"/2010-04-01/Accounts/{other}/Messages.json")
    assert resp.status_code == 403 and resp.json()["code"] == 20003


async def test_update_and_delete_errors_over_http(slow_daemon) -> None:
    _, client = slow_daemon
    _, queued = await create_spaced(client, 2)
    resp = await client.post(messages_path(queued["sid"]), data={"Status": "sent"})
    assert resp.status_code == 400 and resp.json()["code"] == 30400
    resp = await client.post(messages_path(queued["sid"]), json={"Status": "canceled"})
    assert resp.status_code == 200 and resp.json()["status"] == "canceled"
    resp = await client.post(messages_path(queued["sid"]), data={"Body": ""})
    assert resp.status_code == 200 and resp.json()["body"] == ""  # canceled is finished: redactable
    resp = await client.delete(messages_path(queued["sid"]))
    assert resp.status_code == 204 and resp.content == b""
    resp = await client.delete(messages_path(queued["sid"]))
    assert resp.status_code == 404 and resp.json()["code"] == 20404
    resp = await client.post(messages_path("SM" + "0" * 32), data={"Status": "canceled"})
    assert resp.status_code == 404 and resp.json()["code"] == 20404


async def test_inbound_messages_are_listed_fetched_and_deleted(slow_daemon) -> None:
    running, client = slow_daemon
    assert running.simulator is not None
    (sent,) = await create_spaced(client, 1)
    running.simulator.inbound_text("+15550000001", "+15551234567", "a reply")
    with trio.fail_after(10):
        while running.store.count(b"by_account", ACCOUNT.encode()) < 2:  # noqa: ASYNC110 - real clock
            await trio.sleep(0.02)
    listed = (await client.get(messages_path(), params={"To": FROM})).json()["messages"]
    assert [(m["direction"], m["status"], m["body"], m["from"]) for m in listed] == [
        ("inbound", "received", "a reply", "whatsapp:+15551234567")
    ]
    everything = (await client.get(messages_path())).json()["messages"]
    assert {m["sid"] for m in everything} == {listed[0]["sid"], sent["sid"]}
    fetched = (await client.get(messages_path(listed[0]["sid"]))).json()
    assert fetched["direction"] == "inbound"
    resp = await client.delete(messages_path(listed[0]["sid"]))
    assert resp.status_code == 204
    assert [m["sid"] for m in (await client.get(messages_path())).json()["messages"]] == [sent["sid"]]
